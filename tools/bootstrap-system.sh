#!/usr/bin/env bash
# System packages a fresh Debian/Ubuntu machine may lack: python3-venv (ensurepip), git, chromium.
# Idempotent; only calls apt-get when something is actually missing.
set -euo pipefail
need=()
py=$(command -v python3.11 || command -v python3 || true)
if [ -z "$py" ]; then echo "python3.11 is required (apt-get install python3.11)" >&2; exit 1; fi
"$py" -c 'import ensurepip, venv' 2>/dev/null || need+=("python3-venv")
command -v git >/dev/null || need+=("git")
# Chromium renders plotly PNGs (kaleido) and runs the widget tests; never a downloaded browser.
[ -x /usr/bin/chromium ] || need+=("chromium")
if [ ${#need[@]} -gt 0 ]; then
  echo "==> [setup] installing system packages: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
