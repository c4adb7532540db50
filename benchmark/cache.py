"""Content-addressed store of stage outputs.

The key of an entry is the SHA-256 of a canonical JSON of: the stage, the
resolved config of the component, the component's version (`component_version`: its
hand-set `version` and the digest of its code, so that an edit of the code makes new
keys and a comment does not), the keys of its inputs and the seed. Entries live at
`<root>/<stage>/<key[:2]>/<key>.<ext>` (images: `.rgb.npy`, raw HWC uint8 in NumPy's format;
caches before issue 26 hold `.png`, still read; arrays `.npy`; records `.record.json`) with a
JSON sidecar (`<key>.json`) that records
what made them (config, version, and the provenance record: bench, libraries, device,
weights; benchmark.provenance) and the payload's checksum: its size, SHA-256 and
(arrays, images) shape and dtype. Every file is
written to a temporary name in the same directory and renamed into place, the
sidecar first and the payload last: the payload's presence is what makes an entry,
so a killed job leaves no half-written one.

A read verifies the checksum. An entry that fails it (a flipped byte, a file
replaced by another, a payload without its sidecar) is logged once, removed and
recomputed, never served. Two writers of one key (cache_lock=false, or a lock
broken as stale) may interleave so that one's sidecar lies beside the other's
payload: that too reads as a mismatch, hence one recompute, never a wrong entry
and never a loop (a job serves what it computed without reading it back).

Entries written before checksums (a sidecar without "payload") are served when
they decode as what bench writes (an 8-bit RGB PNG, a numeric array of finite
values, a JSON object), and their checksum is recorded at that first read, so any later
damage is caught. Recomputing them instead would cost an old cache all its attacks
(GPU hours) to guard against damage from before this check existed; the decode
test catches a truncated or foreign file there, not a flipped pixel.

Jobs of a sweep that run at once (SLURM arrays, submitit_local) often need the
same item, e.g. one protected image for every transform. An optional lock file
`<key>.lock` next to the entry lets the first job compute it while the others wait
and then read it. A lock appears with its content (written to a temporary file,
then hard-linked to its name, which fails if it exists), so an empty or unparsable
lock is never a live one and is broken at once. Locks only save duplicate work;
the atomic rename alone keeps entries whole. A lock whose owner died (same host,
pid gone) or stopped refreshing it (other hosts: no heartbeat for `stale_after`
seconds) is broken, so a killed job never blocks a sweep.

Inside `write_behind()` (a job's stages) a saved image is stored by a background thread, so
the next batch computes while the last one is written: `save_image` queues the pixels (a
bounded queue: a slow disk holds the job back instead of filling memory) and returns. Until
its entry is on disk this process serves it from memory; its lock, if this process holds
one, is released only once the entry is on disk, so another job waiting on it reads it
whole. Each entry is written exactly as a synchronous save writes it (sidecar, then payload,
each by temporary file and rename), so a job killed mid-write leaves no half entry. Leaving
the block waits for every queued entry (`flush`) and raises the first write error (a full
disk), or, when the block ends by an exception, logs it and lets that exception stand.
"""

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmark.build import semantic_config
from benchmark.errors import BenchError
from benchmark.images import from_uint8, to_uint8
from benchmark.provenance import code_digest, environment

log = logging.getLogger(__name__)


def component_version(component: Any) -> str:
    """The version a cache key holds: the component's hand-set `version` (bumped for what the
    code does not show, e.g. a changed data file) and the digest of its code."""
    return f"{getattr(component, 'version', '1')}+code.{code_digest(component)}"


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


class _BadEntry(Exception):
    """What is wrong with a cache entry that must not be served."""


@dataclass(frozen=True)
class _Kind:
    """How one kind of payload decodes, and what an entry without a checksum must be to be
    served."""
    ext: str
    decode: Callable[[bytes], Any]
    plausible: Callable[[Any], bool]


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def _decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _encode_npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _encode_rgb8(pixels: np.ndarray) -> bytes:
    # to_uint8's pixels are a transposed view: a copy into C order first holds the GIL less
    # than np.save's own strided copy of it (measured: the job's thread waits less)
    return _encode_npy(np.ascontiguousarray(pixels))


def _encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _rgb8(a: np.ndarray) -> bool:
    return a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8


# Images: raw uint8 .npy (issue 26: save 2.1 ms, load 0.9 ms at 512 px against PNG level 1's
# 26-37 ms and 10-11 ms; 1.4-1.9x PNG's bytes; docs/performance.md), PNG before it (read,
# and written only where image_ext says so). benchmark.results.plots names both extensions.
_IMAGE_ENCODERS = {".rgb.npy": _encode_rgb8, ".png": _encode_png}
_KINDS = {k.ext: k for k in (
    _Kind(".rgb.npy", _decode_npy, _rgb8),
    _Kind(".png", _decode_png, _rgb8),
    _Kind(".npy", _decode_npy,
          lambda a: a.dtype.kind in "biuf" and bool(np.isfinite(a).all())),
    _Kind(".record.json", json.loads, lambda value: isinstance(value, dict)),
)}
_PREFIX = re.compile(r"[0-9a-f]{2}")
_ENTRY_FILE = re.compile(r"\.?([0-9a-f]{64})\..+")  # an entry, its sidecar, lock or temporary
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


def _digest(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _form(raw: Any) -> dict:
    """An array's (or an image's pixels') shape and dtype; nothing for other payloads."""
    if isinstance(raw, np.ndarray):
        return {"shape": list(raw.shape), "dtype": str(raw.dtype)}
    return {}


def _payload_record(data: bytes, raw: Any) -> dict:
    """What a sidecar says of its payload."""
    return {**_digest(data), **_form(raw)}


def _require_match(found: dict, expected: dict) -> None:
    for name, value in found.items():
        if value != expected.get(name):
            if name == "sha256":
                raise _BadEntry("its sha256 does not match its sidecar's")
            raise _BadEntry(f"its {name} is {value}, its sidecar says {expected.get(name)}")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, default=str).encode()


def _lock_owner(content: bytes) -> dict | None:
    """The host and pid a lock names; None when it names none (never so for a live lock)."""
    try:
        owner = json.loads(content)
    except ValueError:
        return None
    if isinstance(owner, dict) and isinstance(owner.get("host"), str) \
            and isinstance(owner.get("pid"), int):
        return owner
    return None


def _lock_state(path: Path) -> tuple[bytes, int, int]:
    """A lock's content, inode and mtime: what tells it from a newer lock at the same path (an
    inode alone does not: a freed one is soon reused)."""
    with open(path, "rb") as f:
        stat = os.fstat(f.fileno())
        return f.read(), stat.st_ino, stat.st_mtime_ns


def _not_a_directory(path: Path) -> BenchError:
    return BenchError(f"{path} is not a directory; the cache expected a directory there "
                      f"(<stage>/<2 hex>/<key>.*): move or delete it")


def _unwritable(path: Path, e: OSError) -> BenchError:
    full = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
    if e.errno in full:
        return BenchError(f"cannot write {path}: {full[e.errno]}; free some space or point "
                          f"cache_dir / BENCH_CACHE at another disk (entries already written "
                          f"are kept)")
    return BenchError(f"cannot write {path}: {e.strerror or e}")


def _temporary(path: Path, data: bytes) -> Path:
    """`data` in a new temporary file next to `path`; removed again if writing it fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _strangers(stage_dir: Path) -> list[Path]:
    """What a stage folder holds that is not `<2 hex>/<key>.*` (a results directory saved
    inside the cache, say)."""
    if stage_dir.is_symlink():
        return [stage_dir]
    found = []
    for sub in sorted(stage_dir.iterdir()):
        if sub.is_symlink() or not sub.is_dir() or not _PREFIX.fullmatch(sub.name):
            found.append(sub)
            continue
        for f in sorted(sub.iterdir()):
            entry = _ENTRY_FILE.fullmatch(f.name)
            if not (f.is_file() and entry and entry.group(1).startswith(sub.name)):
                found.append(f)
    return found


class _Writer:
    """The background thread of one `write_behind` block: stores queued images in order.

    `pending` holds each queued entry's pixels until it is on disk (what this process reads
    meanwhile); `deferred` the locks to release once their entry is on disk."""

    def __init__(self, cache: "ArtifactCache", depth: int):
        self.cache = cache
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.guard = threading.Lock()
        self.pending: dict[tuple[str, str], np.ndarray] = {}
        self.queued: dict[tuple[str, str], int] = {}  # the same entry may be queued twice
        self.deferred: set[tuple[str, str]] = set()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None  # started by the first image

    def put(self, stage: str, key: str, ext: str, pixels: np.ndarray, head: dict) -> None:
        self.raise_error()
        if self.thread is None:
            # Not daemonic: an interpreter that exits (the job's own error, Ctrl-C, the end of
            # a multiprocessing worker) first lets it store what is queued; it ends at the
            # block's end, or by itself once the queue is empty and the main thread is gone.
            self.thread = threading.Thread(target=self._run, name="bench-cache-writer")
            self.thread.start()
        with self.guard:
            self.pending[stage, key] = pixels
            self.queued[stage, key] = self.queued.get((stage, key), 0) + 1
        try:
            self.queue.put((stage, key, ext, pixels, head))
        except BaseException:
            self._done(stage, key)
            raise

    def get(self, stage: str, key: str) -> np.ndarray | None:
        with self.guard:
            return self.pending.get((stage, key))

    def defer_unlock(self, stage: str, key: str) -> bool:
        """Whether the lock of this entry is released later, by the writer, once it is on disk."""
        with self.guard:
            if (stage, key) in self.pending:
                self.deferred.add((stage, key))
                return True
        return False

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                if not threading.main_thread().is_alive():
                    return
                continue
            if item is None:  # the block's end
                return
            stage, key, ext, pixels, head = item
            try:
                self.cache._write(stage, key, ext, _IMAGE_ENCODERS[ext](pixels), pixels, head)
            except BaseException as e:  # noqa: BLE001 - raised on the job's thread, not here
                if self.error is None:
                    self.error = e
            finally:
                self._done(stage, key)
                self.queue.task_done()

    def _done(self, stage: str, key: str) -> None:
        with self.guard:
            self.queued[stage, key] -= 1
            if self.queued[stage, key]:
                return  # written again later: still pending, its lock still held
            del self.queued[stage, key]
            self.pending.pop((stage, key), None)
            release = (stage, key) in self.deferred
            self.deferred.discard((stage, key))
        if release:
            self.cache._release(stage, key)

    def close(self) -> None:
        """Wait until every queued entry is stored (or failed) and the thread has ended."""
        if self.thread is not None:
            self.queue.join()
            self.queue.put(None)
            self.thread.join()


class ArtifactCache:
    IMAGE, ARRAY, RECORD, LOCK = ".rgb.npy", ".npy", ".record.json", ".lock"
    PNG = ".png"  # images of caches written before issue 26: read, never written by default

    def __init__(self, root: str | Path, lock: bool = True, stale_after: float = 300.0):
        if root is None or not str(root).strip():
            raise BenchError(f"cache_dir={root!r} is empty; expected a directory path (or unset "
                             f"it to use $BENCH_CACHE or ~/.cache/bench)")
        self.root = Path(root).expanduser()
        self.locking = bool(lock)
        self.stale_after = float(stale_after)
        self._host = socket.gethostname()
        self._heartbeat = _Heartbeat(max(0.05, self.stale_after / 10))
        # per provenance record of the entries read (not computed) here: the record and how
        # many entries of each stage it made; a job reports those made elsewhere
        self.served: dict[str, dict] = {}
        self.image_ext = self.IMAGE  # what save_image writes (PNG: to make an old-style entry)
        self._writer: _Writer | None = None

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
        """Whether a whole entry is there; a bad one is removed (and so written again). An
        image (`IMAGE`) in any format: the current one, an old PNG, or one being written."""
        if ext in (self.IMAGE, self.PNG):
            return self._image_pixels(stage, key) is not None
        return self._load(stage, key, _KINDS[ext]) is not None

    # -- writing behind -------------------------------------------------------------------------

    @contextlib.contextmanager
    def write_behind(self, depth: int = 32) -> Iterator["ArtifactCache"]:
        """Within this block images are stored by a background thread (the module's docstring
        says what stays guaranteed); leaving it flushes. `depth`: images queued at most."""
        if self._writer is not None:  # nested: the outer block flushes
            yield self
            return
        self._writer = _Writer(self, depth)
        try:
            yield self
        except BaseException:
            self._close_writer(raise_error=False)
            raise
        self._close_writer(raise_error=True)

    def flush(self) -> None:
        """Wait until every image queued so far is on disk (its lock released); raise the first
        write error. Without a `write_behind` block, nothing to do."""
        writer = self._writer
        if writer is not None:
            writer.queue.join()
            writer.raise_error()

    def _close_writer(self, raise_error: bool) -> None:
        writer = self._writer
        try:
            writer.close()
        finally:
            self._writer = None
        if writer.error is not None:
            if raise_error:
                raise writer.error
            log.warning("the cache could not store some entries (%s); they are computed again "
                        "next time", writer.error)

    # -- locks ----------------------------------------------------------------------------------

    def try_lock(self, stage: str, key: str) -> bool:
        """Claim the right to compute one entry; False while another live job holds it."""
        if not self.locking:
            return True
        path = self.path(stage, key, self.LOCK)
        owner = json.dumps({"host": self._host, "pid": os.getpid(), "created": time.time()})
        for _ in range(2):
            if self._create_lock(path, owner.encode()):
                if self.locking:
                    self._heartbeat.add(path)
                return True
            if not self._free_if_stale(path):
                return False
        return False

    def unlock(self, stage: str, key: str) -> None:
        if not self.locking:
            return
        writer = self._writer
        if writer is not None and writer.defer_unlock(stage, key):
            return  # its entry is still being written: released once it is on disk
        self._release(stage, key)

    def _release(self, stage: str, key: str) -> None:
        path = self.path(stage, key, self.LOCK)
        self._heartbeat.discard(path)
        path.unlink(missing_ok=True)

    def _create_lock(self, path: Path, owner: bytes) -> bool:
        """Put a lock in place with its content in one step; False if one is there."""
        self._make_dir(path.parent)
        try:
            tmp = _temporary(path, owner)
        except OSError as e:
            raise _unwritable(path, e) from None
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise _unwritable(path, e) from None
            log.warning("%s: this filesystem has no hard links, so cache locks are off: jobs "
                        "that run at once may compute the same entries", path.parent)
            self.locking = False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _free_if_stale(self, path: Path) -> bool:
        """Whether the lock at `path` is gone, or was stale and is now broken."""
        try:
            seen = _lock_state(path)
        except FileNotFoundError:
            return True  # released meanwhile
        except OSError:
            return False
        owner = _lock_owner(seen[0])
        if owner is not None and not self._abandoned(owner, seen[2] / 1e9):
            return False
        return self._break(path, seen)

    def _abandoned(self, owner: dict, mtime: float) -> bool:
        dead = owner["host"] == self._host and not pid_alive(owner["pid"])
        return dead or time.time() - mtime >= self.stale_after

    def _break(self, path: Path, seen: tuple) -> bool:
        # Renamed first so that of several jobs breaking the same lock only one succeeds; one
        # that renamed a newer, live lock (another breaker's, taken meanwhile) puts it back.
        grave = path.with_name(f"{path.name}.stale.{os.getpid()}")
        try:
            os.rename(path, grave)
        except OSError:
            return False
        try:
            with contextlib.suppress(OSError):
                if _lock_state(grave) == seen:
                    return True
            with contextlib.suppress(OSError):
                os.link(grave, path)
            return False
        finally:
            grave.unlink(missing_ok=True)

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
            try:  # also when claiming fails midway (a full disk): no lock of ours outlives it
                for i in pending:
                    if not self.try_lock(stage, keys[i]):
                        continue
                    values[i] = load(keys[i]) if self.locking else None  # finished meanwhile?
                    if values[i] is None:
                        mine.append(i)
                    else:
                        self.unlock(stage, keys[i])
                        waited += 1
                if mine:
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

    # -- writing --------------------------------------------------------------------------------

    def _make_dir(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in (folder, *folder.parents)
                            if p.exists() and not p.is_dir()), folder)
            raise _not_a_directory(blocker) from None
        except OSError as e:
            raise _unwritable(folder, e) from None

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        tmp = _temporary(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _store(self, path: Path, data: bytes) -> None:
        self._make_dir(path.parent)
        try:
            self._replace(path, data)
        except OSError as e:
            raise _unwritable(path, e) from None

    @staticmethod
    def _head(stage: str, key: str, meta: dict) -> dict:
        """A sidecar without its payload record."""
        return {"stage": stage, "key": key, "created": time.time(), "provenance": environment(),
                **meta}

    def _save(self, stage: str, key: str, ext: str, data: bytes, raw: Any, meta: dict) -> None:
        self._write(stage, key, ext, data, raw, self._head(stage, key, meta))

    def _write(self, stage: str, key: str, ext: str, data: bytes, raw: Any, head: dict) -> None:
        sidecar = self.path(stage, key, ".json")
        self._store(sidecar, _json_bytes({**head, "payload": _payload_record(data, raw)}))
        try:
            self._store(self.path(stage, key, ext), data)
        except BaseException:
            sidecar.unlink(missing_ok=True)  # alone it is no entry: leave nothing behind
            raise

    def save_image(self, stage: str, key: str, x: torch.Tensor, meta: dict) -> None:
        """Store an image (rounded to 8 bits) in `image_ext`'s format; inside `write_behind`,
        queue it for the background writer."""
        pixels = to_uint8(x)
        writer, ext = self._writer, self.image_ext
        if writer is None:
            self._save(stage, key, ext, _IMAGE_ENCODERS[ext](pixels), pixels, meta)
            return
        self._make_dir(self.path(stage, key, ext).parent)  # a folder that is a file: now
        # the sidecar as of now (a JSON copy: the caller may change its dicts later)
        head = json.loads(json.dumps(self._head(stage, key, meta), default=str))
        writer.put(stage, key, ext, pixels, head)

    def save_array(self, stage: str, key: str, a: np.ndarray, meta: dict) -> None:
        self._save(stage, key, self.ARRAY, _encode_npy(a), np.asarray(a), meta)

    def save_json(self, stage: str, key: str, payload, meta: dict) -> None:
        self._save(stage, key, self.RECORD, json.dumps(payload, default=str).encode(), payload,
                   meta)

    # -- reading --------------------------------------------------------------------------------

    def load_image(self, stage: str, key: str) -> torch.Tensor | None:
        pixels = self._image_pixels(stage, key)
        return None if pixels is None else from_uint8(pixels)

    def _image_pixels(self, stage: str, key: str) -> np.ndarray | None:
        """An image being written here, else its entry: the current format, or an old PNG where
        there is no current one (both would share one sidecar)."""
        writer = self._writer
        pixels = None if writer is None else writer.get(stage, key)
        if pixels is not None:
            return pixels
        if self.path(stage, key, self.PNG).is_file() \
                and not self.path(stage, key, self.IMAGE).exists():
            return self._load(stage, key, _KINDS[self.PNG])
        return self._load(stage, key, _KINDS[self.IMAGE])

    def load_array(self, stage: str, key: str) -> np.ndarray | None:
        return self._load(stage, key, _KINDS[self.ARRAY])

    def load_json(self, stage: str, key: str):
        return self._load(stage, key, _KINDS[self.RECORD])

    def _load(self, stage: str, key: str, kind: _Kind) -> Any:
        """The decoded entry, or None when it is absent or bad (a bad one is reported once,
        since it is removed)."""
        path = self.path(stage, key, kind.ext)
        try:
            data = path.read_bytes()  # before the sidecar, which a writer puts in place first
        except OSError:
            return None
        try:
            return self._verified(stage, key, kind, data)
        except _BadEntry as bad:
            log.warning("cache entry %s is bad (%s): removed, it is recomputed", path, bad)
            for name in (path, self.path(stage, key, ".json")):
                with contextlib.suppress(OSError):
                    name.unlink(missing_ok=True)
            return None

    def _verified(self, stage: str, key: str, kind: _Kind, data: bytes) -> Any:
        sidecar = self._sidecar(stage, key)
        expected = sidecar.get("payload")
        if expected is not None:
            _require_match(_digest(data), expected)
        try:
            raw = kind.decode(data)
        except Exception as e:  # noqa: BLE001 - whatever a decoder makes of bad bytes
            raise _BadEntry(f"it does not decode: {type(e).__name__}: {e}") from None
        if expected is None:
            if not kind.plausible(raw):
                raise _BadEntry("written before checksums, and not what bench writes")
            self._seal(stage, key, sidecar, data, raw)
        else:
            _require_match(_form(raw), expected)
        self._note_served(stage, sidecar.get("provenance"))
        return raw

    def _note_served(self, stage: str, provenance: Any) -> None:
        entry = self.served.setdefault(json.dumps(provenance, sort_keys=True, default=str),
                                       {"provenance": provenance, "entries": {}})
        entry["entries"][stage] = entry["entries"].get(stage, 0) + 1

    def _sidecar(self, stage: str, key: str) -> dict:
        try:
            sidecar = json.loads(self.path(stage, key, ".json").read_bytes())
        except FileNotFoundError:
            raise _BadEntry("its sidecar is missing") from None
        except (OSError, ValueError):
            raise _BadEntry("its sidecar is unreadable") from None
        if not isinstance(sidecar, dict) or not isinstance(sidecar.get("payload", {}), dict):
            raise _BadEntry("its sidecar is unreadable")
        return sidecar

    def _seal(self, stage: str, key: str, sidecar: dict, data: bytes, raw: Any) -> None:
        """Record the checksum of an entry written before checksums, now found plausible."""
        with contextlib.suppress(OSError):  # a read-only cache: served all the same
            self._replace(self.path(stage, key, ".json"),
                          _json_bytes({**sidecar, "payload": _payload_record(data, raw)}))

    # -- maintenance ----------------------------------------------------------------------------

    def _stage_dirs(self) -> dict[str, Path]:
        if not self.root.is_dir():
            return {}
        stages = {}
        for p in sorted(self.root.iterdir()):
            if p.name.startswith("."):
                continue  # a job's write probe
            if not p.is_dir():
                raise _not_a_directory(p)
            stages[p.name] = p
        return stages

    def _count(self, stage_dir: Path) -> dict[str, int]:
        entries = size = 0
        for f in stage_dir.rglob("*"):
            if f.is_file():
                size += f.stat().st_size
                entries += f.name.endswith((self.IMAGE, self.PNG, self.ARRAY, self.RECORD))
        return {"entries": entries, "bytes": size}

    def info(self) -> dict[str, dict[str, int]]:
        """Per stage: number of entries and bytes on disk."""
        return {stage: self._count(d) for stage, d in self._stage_dirs().items()}

    def clearable(self, stages: list[str] | None = None) -> list[str]:
        """The stages to clear (all when None), refusing one that is not there and a stage
        folder that holds anything but cache entries (a user's results saved inside it)."""
        present = self._stage_dirs()
        chosen = list(present) if stages is None else list(dict.fromkeys(stages))
        unknown = [s for s in chosen if s not in present]
        if unknown:
            raise BenchError(f"no stage {', '.join(map(repr, unknown))} in {self.root}; stages "
                             f"present: {', '.join(present) or 'none'}")
        strangers = [p for stage in chosen for p in _strangers(present[stage])]
        if strangers:
            shown = ", ".join(map(str, strangers[:3])) + (
                f" and {len(strangers) - 3} more" if len(strangers) > 3 else "")
            raise BenchError(f"refusing to clear {self.root}, which holds what is not a cache "
                             f"entry (<stage>/<2 hex>/<key>.*): {shown}. A results directory? "
                             f"Move it out of the cache directory; nothing was deleted")
        return chosen

    def clear(self, stages: list[str] | None = None) -> int:
        """Delete the given stages (all when None), after `clearable`; returns the number of
        entries removed."""
        removed = 0
        for stage in self.clearable(stages):
            removed += self._count(self.root / stage)["entries"]
            shutil.rmtree(self.root / stage)
        return removed
