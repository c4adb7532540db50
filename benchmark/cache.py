"""Content-addressed store of stage outputs.

The key of an entry is the SHA-256 of a canonical JSON of: the stage, the
resolved config of the component, the component's version string, the keys of
its inputs and the seed. Entries live at `<root>/<stage>/<key[:2]>/<key>.<ext>`
with a JSON sidecar (`<key>.json`) that records what made them. Every file is
written to a temporary name in the same directory and renamed into place, so a
killed job leaves no half-written entry and concurrent writers of one key are
safe: the payload is renamed last, and its presence is what makes an entry.
"""

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.images import from_uint8, to_uint8

# Config keys that say where or how fast a component runs, not what it computes.
NON_SEMANTIC_KEYS = frozenset({"device", "batch_size", "progress"})


def _semantic(config):
    if isinstance(config, dict):
        return {k: _semantic(v) for k, v in config.items() if k not in NON_SEMANTIC_KEYS}
    if isinstance(config, (list, tuple)):
        return [_semantic(v) for v in config]
    return config


def cache_key(stage: str, config: dict, version: str, inputs: list[str], seed: int | None) -> str:
    payload = {"stage": stage, "config": _semantic(config), "version": str(version),
               "inputs": list(inputs), "seed": seed}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ArtifactCache:
    IMAGE, ARRAY, RECORD = ".png", ".npy", ".record.json"

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path(self, stage: str, key: str, ext: str) -> Path:
        return self.root / stage / key[:2] / f"{key}{ext}"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _write(self, stage: str, key: str, ext: str, data: bytes, meta: dict) -> None:
        sidecar = {"stage": stage, "key": key, "created": time.time(), **meta}
        self._write_atomic(self.path(stage, key, ".json"),
                           json.dumps(sidecar, indent=1, sort_keys=True, default=str).encode())
        self._write_atomic(self.path(stage, key, ext), data)

    def save_image(self, stage: str, key: str, x: torch.Tensor, meta: dict) -> None:
        buf = io.BytesIO()
        Image.fromarray(to_uint8(x), mode="RGB").save(buf, format="PNG", compress_level=1)
        self._write(stage, key, self.IMAGE, buf.getvalue(), meta)

    def load_image(self, stage: str, key: str) -> torch.Tensor | None:
        path = self.path(stage, key, self.IMAGE)
        try:
            with Image.open(path) as img:
                return from_uint8(np.asarray(img.convert("RGB")))
        except (OSError, ValueError):
            return None  # absent, or unreadable: recompute and overwrite

    def save_array(self, stage: str, key: str, a: np.ndarray, meta: dict) -> None:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        self._write(stage, key, self.ARRAY, buf.getvalue(), meta)

    def load_array(self, stage: str, key: str) -> np.ndarray | None:
        try:
            return np.load(self.path(stage, key, self.ARRAY), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def save_json(self, stage: str, key: str, payload, meta: dict) -> None:
        self._write(stage, key, self.RECORD, json.dumps(payload, default=str).encode(), meta)

    def load_json(self, stage: str, key: str):
        try:
            return json.loads(self.path(stage, key, self.RECORD).read_text())
        except (OSError, ValueError):
            return None

    def info(self) -> dict[str, dict[str, int]]:
        """Per stage: number of entries and bytes on disk."""
        out = {}
        if not self.root.is_dir():
            return out
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            entries = size = 0
            for f in stage_dir.rglob("*"):
                if f.is_file():
                    size += f.stat().st_size
                    entries += f.name.endswith((self.IMAGE, self.ARRAY, self.RECORD))
            out[stage_dir.name] = {"entries": entries, "bytes": size}
        return out

    def clear(self, stages: list[str] | None = None) -> int:
        """Delete the given stages (all when None); returns the number of entries removed."""
        info = self.info()
        removed = 0
        for stage in stages if stages is not None else list(info):
            if stage in info:
                removed += info[stage]["entries"]
                shutil.rmtree(self.root / stage)
        return removed
