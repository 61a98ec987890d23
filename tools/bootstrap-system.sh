#!/usr/bin/env bash
# System packages a fresh Debian/Ubuntu machine may lack: python3-venv (ensurepip), git, chromium, nginx, pandoc.
# Idempotent; only calls apt-get when something is actually missing.
set -euo pipefail
need=()
py=$(command -v python3.11 || command -v python3 || true)
if [ -z "$py" ]; then echo "python3.11 is required (apt-get install python3.11)" >&2; exit 1; fi
"$py" -c 'import ensurepip, venv' 2>/dev/null || need+=("python3-venv")
command -v git >/dev/null || need+=("git")
# Chromium renders plotly PNGs (kaleido) and runs the widget tests; never a downloaded browser.
[ -x /usr/bin/chromium ] || need+=("chromium")
# nginx: the reverse proxy of the scale-out tests (tests/test_scaleout.py); its package's own service is not started.
[ -x /usr/sbin/nginx ] || need+=("nginx")
# pandoc renders the docs site (`make docs`, tools/make_docs.py) where Quarto cannot be installed.
[ -x /usr/bin/pandoc ] || need+=("pandoc")
if [ ${#need[@]} -gt 0 ]; then
  echo "==> [setup] installing system packages: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  # policy-rc.d 101: packages install without starting their services (nginx would listen on port 80)
  rc=/usr/sbin/policy-rc.d; made=
  if [ ! -e $rc ]; then printf '#!/bin/sh\nexit 101\n' | $sudo tee $rc >/dev/null; $sudo chmod +x $rc; made=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
  if [ -n "$made" ]; then $sudo rm -f $rc; fi
fi
