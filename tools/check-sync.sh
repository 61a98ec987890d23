#!/usr/bin/env bash
# nbdev-clean, nbdev-export and the README build must not change the tree: the notebooks are
# the source and the committed package/README must be exactly what they produce.
# On a clean clone this is "git diff is empty afterwards"; during development it compares
# the tree before and after, so work in progress does not trip it but a stale export does.
set -euo pipefail
bin=${1:-.venv/bin}
snapshot() { { git status --porcelain --untracked-files=all; git diff; } | sha256sum; }
before=$(snapshot)
echo "==> [sync] nbdev-clean"
"$bin/nbdev-clean"
echo "==> [sync] nbdev-export"
"$bin/nbdev-export"
echo "==> [sync] README.md from nbs/index.ipynb"
"$bin/python" tools/make_readme.py
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "!! notebooks and package/README were out of sync; nbdev-clean/nbdev-export changed:" >&2
  git status --short >&2
  git --no-pager diff --stat >&2
  echo "!! commit the regenerated files (never edit exported files by hand)" >&2
  exit 1
fi
echo "==> [sync] notebooks, package and README are in sync"
