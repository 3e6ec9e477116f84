"""The GPU image's CUDA and cuDNN agree with the onnxruntime-gpu release the project pins.

onnxruntime-gpu wheels on PyPI link against one CUDA major each; on a base image of another major
the CUDA provider cannot load (ONNX Runtime then falls back to the CPU, or with
ECGFM_PROVIDER=cuda the service refuses to start). The table below is what each release's
manylinux x86_64 cp311 wheel on PyPI links against, read on 2026-12-02 from:

* the NEEDED entries of ``onnxruntime/capi/libonnxruntime_providers_cuda.so`` (``readelf -d`` on
  the installed 1.31.1; for the others the library names in the first 8 MiB of that member,
  read from the wheel with ranged HTTP requests): libcudart.so.12 / libcublas.so.12 up to
  1.26.0, libcudart.so.13 / libcublas.so.13 from 1.27.0;
* the wheels' METADATA: ``Requires-Dist: nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"`` and
  ``nvidia-cudnn-cu12~=9.0`` up to 1.26.0; ``nvidia-cuda-runtime-cu13~=13.0`` (1.27.0) or
  ``nvidia-cuda-runtime~=13.0`` (1.28.0+) and ``nvidia-cudnn-cu13~=9.0`` from 1.27.0 (1.20.x
  declare no CUDA extras; their libraries say CUDA 12).

Add a row when moving the pin, after checking the new wheel the same way.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU_DOCKERFILE = REPO / "docker" / "Dockerfile.gpu"
GPU_LOCK = REPO / "requirements" / "serving-gpu.txt"

# onnxruntime-gpu version -> (CUDA major, cuDNN major) its PyPI wheel is built against.
ONNXRUNTIME_GPU_CUDA: dict[str, tuple[int, int]] = {
    "1.20.2": (12, 9),
    "1.21.1": (12, 9),
    "1.22.0": (12, 9),
    "1.23.2": (12, 9),
    "1.24.1": (12, 9),
    "1.24.4": (12, 9),
    "1.25.1": (12, 9),
    "1.26.0": (12, 9),
    "1.27.0": (13, 9),
    "1.28.0": (13, 9),
    "1.29.0": (13, 9),
    "1.30.0": (13, 9),
    "1.31.0": (13, 9),
    "1.31.1": (13, 9),
}


def gpu_pin() -> str:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [d for d in extras["gpu"] if d.startswith("onnxruntime-gpu")]
    match = re.fullmatch(r"onnxruntime-gpu==(\d+\.\d+\.\d+)", pin)
    assert match, f"the [gpu] extra must pin onnxruntime-gpu exactly (a range can move to another CUDA major): {pin}"
    return match.group(1)


def gpu_base_images() -> list[str]:
    """Every FROM of docker/Dockerfile.gpu with its ARG default substituted."""
    text = GPU_DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
    images = []
    for ref in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        name = ref.strip("${}")
        images.append(args.get(name, ref))
    return images


def cuda_image_versions(image: str) -> tuple[int, int]:
    """(CUDA major, cuDNN major) of an nvidia/cuda tag such as 12.8.1-cudnn-runtime-ubuntu24.04."""
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+(?:\.\d+)?-cudnn(\d*)-(?:runtime|devel)-ubuntu\d+\.\d+", image)
    assert match, f"the GPU base image must be an nvidia/cuda ...-cudnn-runtime tag: {image}"
    cuda = int(match.group(1))
    # tags without a number carry the cuDNN of their CUDA release: 9 for CUDA 12.4 and later
    cudnn = int(match.group(2)) if match.group(2) else 9
    return cuda, cudnn


def test_table_is_about_versions_on_pypi_format() -> None:
    for version, (cuda, cudnn) in ONNXRUNTIME_GPU_CUDA.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version)
        assert cuda in (12, 13) and cudnn == 9


def test_pinned_onnxruntime_gpu_is_in_the_table() -> None:
    assert gpu_pin() in ONNXRUNTIME_GPU_CUDA, (
        f"onnxruntime-gpu {gpu_pin()} is not in the table: check which CUDA it links against and add it")


def test_gpu_base_image_cuda_and_cudnn_match_the_pin() -> None:
    want = ONNXRUNTIME_GPU_CUDA[gpu_pin()]
    images = gpu_base_images()
    assert len(images) == 2, images  # build stage and runtime stage
    assert len(set(images)) == 1, f"build and runtime stages must share the base image: {images}"
    for image in images:
        assert cuda_image_versions(image) == want, (
            f"{image} provides CUDA/cuDNN {cuda_image_versions(image)}, onnxruntime-gpu {gpu_pin()} needs {want}")


def test_gpu_lock_has_the_pinned_gpu_runtime_and_not_the_cpu_one() -> None:
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", GPU_LOCK.read_text(), flags=re.MULTILINE))
    assert pins.get("onnxruntime-gpu") == gpu_pin()
    assert "onnxruntime" not in pins, "onnxruntime and onnxruntime-gpu provide the same module: never both"


@pytest.mark.parametrize(
    ("image", "expected"),
    [("nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", (12, 9)),
     ("nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04", (13, 9)),
     ("nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04", (11, 8))],
)
def test_cuda_tag_parsing(image: str, expected: tuple[int, int]) -> None:
    assert cuda_image_versions(image) == expected


def test_cuda_tag_without_cudnn_is_refused() -> None:
    with pytest.raises(AssertionError, match="cudnn-runtime"):
        cuda_image_versions("nvidia/cuda:12.8.1-runtime-ubuntu24.04")
