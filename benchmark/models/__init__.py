"""Loading of pretrained networks: each model is loaded once per process and shared.

benchmark.models.hub        where weights come from (HF cache, local folders), `bench weights`
benchmark.models.diffusion  Stable Diffusion components: load_sd_components(model, dtype, device)
benchmark.models.tiny       tiny random SD models (`tiny/sd`, ...) for tests and plumbing
benchmark.models.encoders   image encoders that defenses attack and metrics read
benchmark.models.faces      dlib face detection (boxes for masks and crops)
"""

from collections.abc import Callable
from typing import Any

import torch

_LOADED: dict[tuple, Any] = {}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def shared(key: tuple, load: Callable[[], Any]) -> Any:
    """Return the object loaded under `key`, loading it on first use."""
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]


def forget() -> None:
    """Drop every shared model (their memory is freed once no one else holds them)."""
    _LOADED.clear()
