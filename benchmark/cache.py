"""Content-addressed store of stage outputs.

The key of an entry is the SHA-256 of a canonical JSON of: the stage, the
resolved config of the component, the component's version string, the keys of
its inputs and the seed. Entries live at `<root>/<stage>/<key[:2]>/<key>.<ext>`
with a JSON sidecar (`<key>.json`) that records what made them. Every file is
written to a temporary name in the same directory and renamed into place, so a
killed job leaves no half-written entry and concurrent writers of one key are
safe: the payload is renamed last, and its presence is what makes an entry.

Jobs of a sweep that run at once (SLURM arrays, submitit_local) often need the
same item, e.g. one protected image for every transform. An optional lock file
`<key>.lock`, created with O_EXCL next to the entry, lets the first job compute it
while the others wait and then read it. Locks only save duplicate work; the
atomic rename alone keeps entries whole. A lock whose owner died (same host, pid
gone) or stopped refreshing it (other hosts: no heartbeat for `stale_after`
seconds) is broken, so a killed job never blocks a sweep.
"""

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmark.build import semantic_config
from benchmark.errors import BenchError
from benchmark.images import from_uint8, to_uint8

log = logging.getLogger(__name__)

def cache_key(stage: str, config: dict, version: str, inputs: list[str], seed: int | None) -> str:
    payload = {"stage": stage, "config": semantic_config(config), "version": str(version),
               "inputs": list(inputs), "seed": seed}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) still answers signal 0 but runs nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class _Heartbeat:
    """Refreshes the mtime of the locks this process holds, so others see them alive."""

    def __init__(self, interval: float):
        self.interval = interval
        self.paths: set[Path] = set()
        self.guard = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, path: Path) -> None:
        with self.guard:
            self.paths.add(path)
            if self.thread is None:
                self.thread = threading.Thread(target=self._beat, daemon=True,
                                               name="bench-cache-heartbeat")
                self.thread.start()

    def discard(self, path: Path) -> None:
        with self.guard:
            self.paths.discard(path)

    def _beat(self) -> None:
        while True:
            time.sleep(self.interval)
            with self.guard:
                paths = list(self.paths)
            for path in paths:
                try:
                    os.utime(path)
                except OSError:
                    pass  # broken as stale by another job: it recomputes; files stay whole


class ArtifactCache:
    IMAGE, ARRAY, RECORD, LOCK = ".png", ".npy", ".record.json", ".lock"

    def __init__(self, root: str | Path, lock: bool = True, stale_after: float = 300.0):
        if root is None or not str(root).strip():
            raise BenchError(f"cache_dir={root!r} is empty; expected a directory path (or unset "
                             f"it to use $BENCH_CACHE or ~/.cache/bench)")
        self.root = Path(root).expanduser()
        self.locking = bool(lock)
        self.stale_after = float(stale_after)
        self._host = socket.gethostname()
        self._heartbeat = _Heartbeat(max(0.05, self.stale_after / 10))

    def check(self, writable: bool = True) -> "ArtifactCache":
        """Refuse a root that is a file, or (writable) one where entries cannot be written."""
        where = f"cache directory {self.root} (cache_dir / BENCH_CACHE)"
        if self.root.exists() and not self.root.is_dir():
            raise BenchError(f"{where} is not a directory; point it at a directory")
        if not writable:
            return self
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise BenchError(f"{where} is not writable ({e.strerror}); choose a writable one "
                             f"with cache_dir=PATH or BENCH_CACHE=PATH") from None
        return self

    def path(self, stage: str, key: str, ext: str) -> Path:
        return self.root / stage / key[:2] / f"{key}{ext}"

    def has(self, stage: str, key: str, ext: str) -> bool:
        return self.path(stage, key, ext).is_file()

    # -- locks ----------------------------------------------------------------------------------

    def try_lock(self, stage: str, key: str) -> bool:
        """Claim the right to compute one entry; False while another live job holds it."""
        if not self.locking:
            return True
        path = self.path(stage, key, self.LOCK)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._break_if_stale(path):
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                json.dump({"host": self._host, "pid": os.getpid(), "created": time.time()}, f)
            self._heartbeat.add(path)
            return True
        return False

    def unlock(self, stage: str, key: str) -> None:
        if not self.locking:
            return
        path = self.path(stage, key, self.LOCK)
        self._heartbeat.discard(path)
        path.unlink(missing_ok=True)

    def _break_if_stale(self, path: Path) -> bool:
        try:
            owner = json.loads(path.read_text() or "{}")
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False  # being written or just released: look again next round
        dead = owner.get("host") == self._host and not pid_alive(int(owner.get("pid", -1)))
        if not dead and age < self.stale_after:
            return False
        # Rename first so that of several jobs breaking the same lock only one succeeds.
        grave = path.with_name(f"{path.name}.stale.{os.getpid()}")
        try:
            os.rename(path, grave)
        except OSError:
            return False
        grave.unlink(missing_ok=True)
        return True

    def load_or_compute(self, stage: str, keys: list[str], load: Callable[[str], Any],
                        compute: Callable[[list[int]], list[Any]], poll: float = 0.05,
                        ) -> tuple[list[Any], int, int]:
        """Every entry of `keys`: read it, or claim and compute it, or wait for its computer.

        `load(key)` returns the entry or None; `compute(indices)` makes and stores the entries
        of those indices (as one batch) and returns them. Returns (values, computed, waited).
        """
        values = [load(k) for k in keys]
        pending = [i for i, v in enumerate(values) if v is None]
        computed = waited = 0
        delay = poll
        logged = False
        while pending:
            mine = []
            for i in pending:
                if not self.try_lock(stage, keys[i]):
                    continue
                values[i] = load(keys[i]) if self.locking else None  # finished while we looked
                if values[i] is None:
                    mine.append(i)
                else:
                    self.unlock(stage, keys[i])
                    waited += 1
            if mine:
                try:
                    for i, v in zip(mine, compute(mine)):
                        values[i] = v
                finally:
                    for i in mine:
                        self.unlock(stage, keys[i])
                computed += len(mine)
            pending = [i for i in pending if values[i] is None]
            if pending:
                if not logged:
                    log.info("%s: waiting for %d item(s) that another job is computing",
                             stage, len(pending))
                    logged = True
                time.sleep(delay)
                delay = min(2 * delay, 2.0)
                for i in pending:
                    values[i] = load(keys[i])
                    waited += values[i] is not None
                pending = [i for i in pending if values[i] is None]
        return values, computed, waited

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
