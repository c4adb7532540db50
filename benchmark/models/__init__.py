"""Loading of pretrained networks: each model is loaded once per process and shared."""

from collections.abc import Callable
from typing import Any

import torch

_LOADED: dict[tuple, Any] = {}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def shared(key: tuple, load: Callable[[], Any]) -> Any:
    """Return the object loaded under `key`, loading it on first use."""
    if key not in _LOADED:
        _LOADED[key] = load()
    return _LOADED[key]
