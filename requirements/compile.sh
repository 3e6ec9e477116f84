#!/usr/bin/env bash
# Regenerate the lock files in requirements/ from pyproject.toml. Run it after changing
# [project] dependencies or the [gpu] / [export] extras, and commit the results:
#
#   requirements/compile.sh          # needs uv (`pip install uv==0.13.8`) and PyPI
#
# torch comes from the PyTorch CPU wheel index (https://download.pytorch.org/whl/cpu), pinned to
# the local version 2.13.0+cpu so that no lock can ever name a CUDA build. Where that index is
# not reachable, point TORCH_CPU_WHEELS at a directory holding torch-2.13.0+cpu wheels instead.
#
#   serving-cpu.txt  `pip install .`, Python 3.11 (docker/Dockerfile.cpu, python:3.11-slim)
#   serving-gpu.txt  the same with onnxruntime-gpu instead of onnxruntime, Python 3.12
#                    (docker/Dockerfile.gpu: Ubuntu 24.04's python3); never both packages
#   export.txt       `pip install .[export]`, Python 3.11 (docker/Dockerfile.export, the init service)
#   dev.txt          `pip install .[export,dev]`, Python 3.11: what scripts/setup.sh installs for the tests
#
# All three pin the same ONNX Runtime release: the [gpu] extra's onnxruntime-gpu version.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
command -v "$UV" >/dev/null || { echo "uv not found: pip install uv==0.13.8 (or set UV=/path/to/uv)" >&2; exit 2; }

ORT_VERSION=$(python3 - <<'PY'
import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
(pin,) = [d for d in extras["gpu"] if d.startswith("onnxruntime-gpu==")]
print(pin.split("==", 1)[1])
PY
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'onnxruntime==%s\n' "$ORT_VERSION" >"$work/serving.txt"
printf 'onnxruntime==%s\ntorch==2.13.0+cpu\n' "$ORT_VERSION" >"$work/export.txt"

if [ -n "${TORCH_CPU_WHEELS:-}" ]; then
  torch_source=(--find-links "$TORCH_CPU_WHEELS")
else
  torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi

compile() {  # compile OUTPUT PYTHON_VERSION ARGS...
  local out=$1 python=$2
  shift 2
  "$UV" pip compile pyproject.toml --quiet --no-config --python-version "$python" \
    --python-platform x86_64-manylinux_2_28 --custom-compile-command "requirements/compile.sh" \
    --output-file "requirements/$out" "$@"
}
compile serving-cpu.txt 3.11 --constraint "$work/serving.txt"
compile serving-gpu.txt 3.12 --extra gpu --no-emit-package onnxruntime --constraint "$work/serving.txt"
compile export.txt 3.11 --extra export --constraint "$work/export.txt" "${torch_source[@]}"
compile dev.txt 3.11 --extra export --extra eval --extra train --extra dev --constraint "$work/export.txt" "${torch_source[@]}"
echo "locked onnxruntime(-gpu) $ORT_VERSION: requirements/serving-cpu.txt serving-gpu.txt export.txt dev.txt"
