#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with everything the tests need: the project
# (editable) with the [export] and [dev] extras, at the versions of requirements/dev.txt
# (export.txt, the lock the bundle-builder image installs, plus the test tools), plus Debian's
# prometheus, chromium and docker-compose.
#
# ONNX Runtime: the CPU package `onnxruntime`. ECGFM_GPU=1 scripts/setup.sh installs the
# [gpu] extra's onnxruntime-gpu in its place (they provide the same module: never both).
# torch: exactly 2.13.0, the CPU build (2.13.0+cpu: on the PyTorch CPU index, or a local wheel
# directory that pip is configured with), installed first so no dependency can pull another.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip)
"${PIP[@]}" install -q --upgrade pip
installed() { "${PIP[@]}" show -q "$1" >/dev/null 2>&1; }
# A venv set up before the lean install split has onnxruntime-gpu (and maybe onnxruntime over
# it, sharing files): remove both, so the one wanted below is installed whole.
if [ "${ECGFM_GPU:-0}" != 1 ] && installed onnxruntime-gpu; then
  "${PIP[@]}" uninstall -q -y onnxruntime-gpu onnxruntime
fi
# torch alone first (--no-deps: its dependencies come from PyPI below, at the lock's versions); the
# PyPI index has no +cpu build, so it is found in a configured wheel directory or on the CPU index.
"${PIP[@]}" install -q --no-deps "torch==2.13.0+cpu" 2>/dev/null \
  || "${PIP[@]}" install -q --no-deps "torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
"${PIP[@]}" install -q -c requirements/dev.txt -e ".[export,eval,train,dev]"
if [ "${ECGFM_GPU:-0}" = 1 ]; then
  gpu_pin=$(.venv/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"])')
  "${PIP[@]}" uninstall -q -y onnxruntime onnxruntime-gpu
  "${PIP[@]}" install -q "$gpu_pin"
fi
# Debian packages the tests use (skipped with a reason where one is missing):
#   prometheus (server + promtool) for the metrics tests, chromium (headless, driven by Playwright)
#   for the tests that render /docs and the report page offline, poppler-utils (pdftoppm) for the
#   test that renders the PDF report's pages, docker-compose (v1) for the compose-file validation
#   (no Docker engine needed).
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}") \
    >/dev/null || echo "warning: could not install ${missing[*]}; the tests that need them will be skipped" >&2
fi
echo "setup done: .venv ready"
