#!/usr/bin/env bash
# The project's Python virtual environment, .venv/ at the repository root (ignored by git):
# made with `python3 -m venv` when missing, and prints its python's path. Every script and
# test that runs Python uses it (tests: gemma_tests::python(), or $GEMMA_PYTHON); nothing
# goes into the system Python, which Debian 12 and Raspberry Pi OS refuse (PEP 668).
#
#   scripts/venv.sh                   # make .venv (pip only), print .venv/bin/python
#   scripts/venv.sh -r FILE [-r …]    # also install these requirement files (pinned), once:
#                                     # a stamp keeps their hash, so a second run is instant
#
# Environment: GEMMA_VENV, the folder (default: <repo>/.venv).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${GEMMA_VENV:-$repo/.venv}
py=$venv/bin/python

say() { echo "venv: $*" >&2; }

if ! "$py" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  say "making $venv"
  if ! python3 -m venv "$venv" >&2; then
    say "python3 cannot make a virtual environment: run scripts/setup.sh (installs python3-venv)"
    exit 1
  fi
fi

files=()
while [ $# -gt 0 ]; do
  case $1 in
    -r) files+=("$2"); shift 2 ;;
    *) say "unknown argument $1 (usage: venv.sh [-r FILE]…)"; exit 2 ;;
  esac
done

if [ ${#files[@]} -gt 0 ]; then
  stamp=$venv/.requirements.sha256
  want=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    args=()
    for f in "${files[@]}"; do args+=(-r "$f"); done
    say "installing ${files[*]} into $venv"
    "$py" -m pip install --quiet --disable-pip-version-check "${args[@]}" >&2
    echo "$want" >"$stamp"
  fi
fi
echo "$py"
