#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with the project and its test tools.
# torch is pinned to 2.13.0 and installed first, so no dependency range can pull another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# onnxruntime-gpu runs on CPU too (it falls back to the CPU provider, which the service reports).
.venv/bin/python -m pip install -q -e ".[gpu,dev]"
# Prometheus (server + promtool) for the metrics tests; Debian's package.
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) \
    >/dev/null || echo "warning: could not install prometheus; its tests will be skipped" >&2
fi
echo "setup done: .venv ready"
