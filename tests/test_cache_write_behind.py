"""The cache's image format and its background writer (issue 26, item 1): an image being
written is served from memory here and invisible elsewhere until whole; its lock is released
only once it is on disk; a crash mid-write leaves no entry; entries of the old format (PNG)
are still read, by the cache and by bench grid."""

import hashlib
import io
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.cache import ArtifactCache
from benchmark.images import to_uint8
from benchmark.results import plots

SPAWN = multiprocessing.get_context("spawn")
KEYS = [f"{i:02x}" * 32 for i in range(3)]


def _image(seed: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.rand(3, size, size, generator=g) * 255) / 255


def _gated(cache: ArtifactCache) -> threading.Event:
    """Hold the cache's background writer before each entry until the returned event is set."""
    gate, write = threading.Event(), cache._write

    def held(*args):
        assert gate.wait(30)
        write(*args)

    cache._write = held
    return gate


def _bad_entry_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "is bad" in r.getMessage()]


def test_an_image_being_written_is_served_from_memory_and_locked_until_on_disk(tmp_path):
    cache, other = ArtifactCache(tmp_path), ArtifactCache(tmp_path)  # other: another job
    with cache.write_behind():
        gate = _gated(cache)
        assert cache.try_lock("protect", KEYS[0])
        cache.save_image("protect", KEYS[0], _image(0), {"seconds": 1.0})
        cache.unlock("protect", KEYS[0])
        # not on disk yet: this cache serves it from memory, another sees no entry and a lock
        assert torch.equal(cache.load_image("protect", KEYS[0]), _image(0))
        assert cache.has("protect", KEYS[0], cache.IMAGE)
        assert not cache.path("protect", KEYS[0], cache.IMAGE).exists()
        assert other.load_image("protect", KEYS[0]) is None
        assert cache.path("protect", KEYS[0], cache.LOCK).exists()
        assert not other.try_lock("protect", KEYS[0])
        gate.set()
        cache.flush()
        assert not cache.path("protect", KEYS[0], cache.LOCK).exists()
        assert torch.equal(other.load_image("protect", KEYS[0]), _image(0))
    assert not [t for t in threading.enumerate() if t.name == "bench-cache-writer"]
    sidecar = json.loads(cache.path("protect", KEYS[0], ".json").read_text())
    assert sidecar["seconds"] == 1.0 and sidecar["payload"]["shape"] == [16, 16, 3]


def test_the_sidecar_is_the_one_of_when_the_image_was_saved(tmp_path):
    cache = ArtifactCache(tmp_path)
    meta = {"config": {"quality": 75}}
    with cache.write_behind():
        gate = _gated(cache)
        cache.save_image("transform", KEYS[0], _image(0), meta)
        meta["config"]["quality"] = 10  # the caller reuses its dicts meanwhile
        gate.set()
    sidecar = json.loads(cache.path("transform", KEYS[0], ".json").read_text())
    assert sidecar["config"] == {"quality": 75}


def _wait_for_the_other_job(root, ready, results):
    """Another process's job that needs KEYS[0] while the parent is still writing it."""
    cache = ArtifactCache(root)
    seen, computed = [], []

    def load(key):
        seen.append(cache.path("protect", key, ".json").exists())
        return cache.load_image("protect", key)

    ready.set()
    values, n_computed, waited = cache.load_or_compute(
        "protect", [KEYS[0]], load, lambda indices: computed.append(indices) or [_image(9)])
    results.put((n_computed, waited, to_uint8(values[0]).tobytes(), any(seen)))


def test_another_process_waits_for_the_whole_entry_and_never_computes_it(tmp_path):
    """The parent computed KEYS[0] under its lock and queued it; its writer is held between the
    sidecar and the payload. The other job must wait for it, then read it whole: were the lock
    released at unlock() (before the entry is on disk), it would find neither and compute."""
    cache = ArtifactCache(tmp_path)
    ready, results = SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_wait_for_the_other_job, args=(tmp_path, ready, results),
                          daemon=True)
    sidecar_written = threading.Event()
    gate, store = threading.Event(), cache._store

    def held_after_the_sidecar(path, data):
        store(path, data)
        if path.suffix == ".json":
            sidecar_written.set()
            assert gate.wait(60)

    try:
        with cache.write_behind():
            cache._store = held_after_the_sidecar
            _values, computed, _ = cache.load_or_compute(
                "protect", [KEYS[0]], lambda k: cache.load_image("protect", k),
                lambda indices: [cache.save_image("protect", KEYS[0], _image(0), {})
                                 or _image(0)])
            assert computed == 1 and sidecar_written.wait(10)
            child.start()
            assert ready.wait(60)
            time.sleep(1.0)  # the other job polls the half-made entry meanwhile
            assert child.is_alive()
            gate.set()
        n_computed, waited, pixels, saw_sidecar = results.get(timeout=60)
        child.join(30)
    finally:
        gate.set()
        if child.is_alive():
            child.kill()
    assert (n_computed, waited) == (0, 1)
    assert pixels == to_uint8(_image(0)).tobytes() and saw_sidecar


CRASH = textwrap.dedent("""
    import sys, time, torch
    import benchmark.cache as bc
    from benchmark.cache import ArtifactCache

    real = bc._temporary

    def half_then_hang(path, data):
        if not path.name.endswith(ArtifactCache.IMAGE) or not path.name.startswith("01"):
            return real(path, data)
        tmp = real(path, data[: len(data) // 2])  # a payload half on disk, under its temp name
        print("mid-write", flush=True)
        time.sleep(120)

    bc._temporary = half_then_hang
    cache = ArtifactCache(sys.argv[1])
    with cache.write_behind():
        for i, key in enumerate(sys.argv[2:]):
            assert cache.try_lock("protect", key)
            cache.save_image("protect", key, torch.full((3, 16, 16), i / 255), {})
            cache.unlock("protect", key)
        time.sleep(120)  # the job computes on; killed before it flushes
""")


def test_a_job_killed_mid_write_leaves_no_entry_and_no_lock_that_blocks(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", CRASH, str(tmp_path), *KEYS],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "mid-write"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    cache = ArtifactCache(tmp_path)
    # the first entry was finished before the kill; the second is a sidecar and half a
    # temporary file: no entry; the third was never written
    assert torch.equal(cache.load_image("protect", KEYS[0]), torch.full((3, 16, 16), 0.0))
    assert not cache.path("protect", KEYS[1], cache.IMAGE).exists()
    assert list(cache.path("protect", KEYS[1], "").parent.glob(f".{KEYS[1]}*.tmp"))
    with caplog.at_level(logging.WARNING, logger="benchmark.cache"):
        _values, computed, _ = cache.load_or_compute(
            "protect", KEYS[1:], lambda k: cache.load_image("protect", k),
            lambda indices: [cache.save_image("protect", KEYS[1 + i], _image(i), {})
                             or _image(i) for i in indices])
    assert computed == 2  # the dead job's locks were broken at once, nothing was served half
    assert not _bad_entry_warnings(caplog)
    for i, key in enumerate(KEYS[1:]):
        assert torch.equal(cache.load_image("protect", key), _image(i))
    assert cache.clear() == 3  # its leftovers are the cache's own (no stranger refusal)


def test_an_error_in_the_block_stands_and_what_was_queued_is_stored_whole(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(RuntimeError, match="the job's own error"), cache.write_behind():
        gate = _gated(cache)
        for i, key in enumerate(KEYS):
            assert cache.try_lock("protect", key)
            cache.save_image("protect", key, _image(i), {})
            cache.unlock("protect", key)
        threading.Timer(0.2, gate.set).start()
        raise RuntimeError("the job's own error")
    for i, key in enumerate(KEYS):
        assert torch.equal(ArtifactCache(tmp_path).load_image("protect", key), _image(i))
    assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob("*.tmp"))


def test_a_write_error_behind_is_raised_at_the_end_and_leaves_nothing_half(tmp_path,
                                                                            monkeypatch):
    import benchmark.cache

    cache = ArtifactCache(tmp_path)

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    with pytest.raises(Exception, match="no space left on device") as e, cache.write_behind():
        assert cache.try_lock("protect", KEYS[0])
        monkeypatch.setattr(benchmark.cache.ArtifactCache, "_replace",
                            staticmethod(full_disk))
        cache.save_image("protect", KEYS[0], _image(0), {})
        cache.unlock("protect", KEYS[0])
    assert type(e.value).__name__ == "BenchError"
    monkeypatch.undo()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no sidecar, no lock left
    # and when the block ends by another error, that one stands (the write error is logged)
    with pytest.raises(KeyboardInterrupt), cache.write_behind():
        monkeypatch.setattr(benchmark.cache.ArtifactCache, "_replace",
                            staticmethod(full_disk))
        cache.save_image("protect", KEYS[1], _image(1), {})
        raise KeyboardInterrupt


# -- the old format ------------------------------------------------------------------------------

def _old_entry(cache: ArtifactCache, stage: str, key: str, x: torch.Tensor) -> None:
    """An entry as bench wrote it before issue 26: PNG level 1, a sidecar with its checksum."""
    pixels = to_uint8(x)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG", compress_level=1)
    data = buf.getvalue()
    folder = tmp = cache.path(stage, key, ".png").parent
    folder.mkdir(parents=True, exist_ok=True)
    (tmp / f"{key}.json").write_text(json.dumps({
        "stage": stage, "key": key, "created": 0.0, "payload": {
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "shape": list(pixels.shape), "dtype": "uint8"}}))
    (folder / f"{key}.png").write_bytes(data)


def test_entries_of_the_old_format_are_read_not_recomputed(tmp_path):
    cache = ArtifactCache(tmp_path)
    _old_entry(cache, "protect", KEYS[0], _image(0))
    assert cache.has("protect", KEYS[0], cache.IMAGE)
    values, computed, _ = cache.load_or_compute(
        "protect", KEYS[:2], lambda k: cache.load_image("protect", k),
        lambda indices: [cache.save_image("protect", KEYS[i], _image(i), {}) or _image(i)
                         for i in indices])
    assert computed == 1 and torch.equal(values[0], _image(0))
    assert cache.path("protect", KEYS[0], cache.PNG).is_file()  # left as it was
    assert cache.path("protect", KEYS[1], cache.IMAGE).is_file()  # new entries: the new format
    assert cache.info() == {"protect": {"entries": 2, "bytes": sum(
        p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())}}
    # a damaged old entry is caught by its checksum as before
    path = cache.path("protect", KEYS[0], cache.PNG)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x40
    path.write_bytes(bytes(data))
    assert cache.load_image("protect", KEYS[0]) is None and not path.exists()


def test_bench_grid_reads_both_formats_and_names_a_damaged_one(tmp_path):
    cache = ArtifactCache(tmp_path)
    _old_entry(cache, "clean", KEYS[0], _image(0))
    cache.save_image("protect", KEYS[1], _image(1), {})
    assert plots.CACHED_IMAGE_FILES == (ArtifactCache.IMAGE, ArtifactCache.PNG)
    unreadable = []
    for stage, key, i in (("clean", KEYS[0], 0), ("protect", KEYS[1], 1)):
        path = plots._cached_image_file(tmp_path / stage / key[:2], key)
        assert np.array_equal(plots._cached_image(path, unreadable), to_uint8(_image(i)))
    assert plots._cached_image_file(tmp_path / "protect" / KEYS[2][:2], KEYS[2]) is None
    path = cache.path("protect", KEYS[1], cache.IMAGE)
    np.save(path, np.zeros((16, 16, 3), np.uint8))  # a valid array, not the one recorded
    assert plots._cached_image(path, unreadable) == plots.UNREADABLE
    assert unreadable and "sha256" in unreadable[0]
    os.remove(cache.path("protect", KEYS[1], ".json"))  # no checksum to go by: decoded, checked
    np.save(path, np.zeros((16, 16), np.float32))
    assert plots._cached_image(path, unreadable) == plots.UNREADABLE
