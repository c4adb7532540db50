"""The cache serves only the bytes it wrote: checksums, atomic locks, a stage folder that is a
file, a full disk, and `bench cache clear` next to a user's results."""

import errno
import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, bench
from PIL import Image

import benchmark.cache
from benchmark.cache import ArtifactCache
from benchmark.errors import BenchError

KEY, OTHER = "ab" * 32, "cd" * 32
VECTOR = np.linspace(0, 1, 2048, dtype=np.float32)


def _image(seed: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.rand(3, size, size, generator=g) * 255) / 255


def _flip_a_byte(path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _legacy(cache: ArtifactCache, stage: str, key: str) -> None:
    """Make an entry look as a cache written before checksums: no "payload" in its sidecar."""
    sidecar = cache.path(stage, key, ".json")
    record = json.loads(sidecar.read_text())
    del record["payload"]
    sidecar.write_text(json.dumps(record))


# -- 1. checksums ---------------------------------------------------------------------------------

def test_a_flipped_byte_in_a_feature_vector_is_reported_once_removed_and_recomputed(tmp_path,
                                                                                     caplog):
    cache = ArtifactCache(tmp_path)
    cache.save_array("embed", KEY, VECTOR, {})
    path = cache.path("embed", KEY, cache.ARRAY)
    _flip_a_byte(path)
    assert np.isfinite(np.load(path)).all()  # still a plausible array: only the checksum knows

    def compute(indices):
        cache.save_array("embed", KEY, VECTOR, {})
        return [VECTOR]

    with caplog.at_level(logging.WARNING, logger="benchmark.cache"):
        values, computed, _ = cache.load_or_compute(
            "embed", [KEY], lambda k: cache.load_array("embed", k), compute)
    assert computed == 1 and np.array_equal(values[0], VECTOR)
    [warning] = _warnings(caplog)
    assert str(path) in warning and "sha256" in warning
    assert np.array_equal(cache.load_array("embed", KEY), VECTOR)  # the recomputed entry


def _another_image(path) -> None:
    """Replace an image entry's payload by a valid image of another size, in its own format."""
    if path.suffix == ".png":
        Image.new("RGB", (20, 20)).save(path)
    else:
        np.save(path, np.zeros((20, 20, 3), np.uint8))


@pytest.mark.parametrize("ext", [ArtifactCache.IMAGE, ArtifactCache.PNG])
def test_an_image_replaced_by_one_of_another_size_is_not_served(tmp_path, caplog, ext):
    cache = ArtifactCache(tmp_path)
    cache.image_ext = ext  # PNG: as a cache written before issue 26
    cache.save_image("protect", KEY, _image(0), {})
    path = cache.path("protect", KEY, ext)
    _another_image(path)
    with caplog.at_level(logging.WARNING, logger="benchmark.cache"):
        assert cache.load_image("protect", KEY) is None
        assert cache.load_image("protect", KEY) is None  # gone: a plain miss, not reported again
    assert len(_warnings(caplog)) == 1 and str(path) in _warnings(caplog)[0]
    assert not path.exists() and not cache.path("protect", KEY, ".json").exists()


def test_the_sidecar_records_size_sha256_shape_and_dtype(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_image("protect", KEY, _image(0, 8), {"seconds": 1.5})
    record = json.loads(cache.path("protect", KEY, ".json").read_text())
    png = cache.path("protect", KEY, cache.IMAGE).read_bytes()
    assert record["seconds"] == 1.5
    assert record["payload"]["bytes"] == len(png) and len(record["payload"]["sha256"]) == 64
    assert record["payload"]["shape"] == [8, 8, 3] and record["payload"]["dtype"] == "uint8"


def test_a_corrupt_job_record_is_recomputed(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_json("job", KEY, {"rows": [{"value": 12.5}], "stats": {}}, {})
    path = cache.path("job", KEY, cache.RECORD)
    path.write_text(path.read_text().replace("12.5", "92.5"))  # still valid JSON
    assert cache.load_json("job", KEY) is None


def test_a_sidecar_describing_another_writers_payload_is_a_recompute_not_a_loop(tmp_path):
    """Two writers of one key (no lock) interleaved: A's sidecar, B's sidecar, B's payload, A's
    payload. The entry is whole but its sidecar is B's: never served, recomputed once."""
    a, b = ArtifactCache(tmp_path / "a"), ArtifactCache(tmp_path)
    a.save_array("embed", KEY, VECTOR + 1, {})
    b.save_array("embed", KEY, VECTOR, {})
    b.path("embed", KEY, b.ARRAY).write_bytes(a.path("embed", KEY, a.ARRAY).read_bytes())
    calls = []

    def compute(indices):
        calls.append(indices)
        b.save_array("embed", KEY, VECTOR, {})
        return [VECTOR]

    values, computed, _ = b.load_or_compute(
        "embed", [KEY], lambda k: b.load_array("embed", k), compute)
    assert computed == 1 and calls == [[0]] and np.array_equal(values[0], VECTOR)


def test_a_payload_without_its_sidecar_is_recomputed(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_array("embed", KEY, VECTOR, {})
    cache.path("embed", KEY, ".json").unlink()
    assert cache.load_array("embed", KEY) is None
    assert not cache.has("embed", KEY, cache.ARRAY)


def test_has_is_false_for_a_corrupt_entry_so_it_is_written_again(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_image("clean", KEY, _image(0), {})
    assert cache.has("clean", KEY, cache.IMAGE)
    _flip_a_byte(cache.path("clean", KEY, cache.IMAGE), offset=60)
    assert not cache.has("clean", KEY, cache.IMAGE)


def test_entries_of_an_older_cache_are_served_when_plausible_and_then_sealed(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_image("protect", KEY, _image(0), {})
    cache.save_array("embed", KEY, VECTOR, {})
    cache.save_json("job", KEY, {"rows": []}, {})
    for stage in ("protect", "embed", "job"):
        _legacy(cache, stage, KEY)
    assert torch.equal(cache.load_image("protect", KEY), _image(0))
    assert np.array_equal(cache.load_array("embed", KEY), VECTOR)
    assert cache.load_json("job", KEY) == {"rows": []}
    # served once, they now carry a checksum: a later flipped byte is caught
    sealed = json.loads(cache.path("embed", KEY, ".json").read_text())["payload"]
    assert sealed["shape"] == [2048] and sealed["dtype"] == "float32"
    _flip_a_byte(cache.path("embed", KEY, cache.ARRAY))
    assert cache.load_array("embed", KEY) is None


def test_entries_of_an_older_cache_that_are_implausible_are_recomputed(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.image_ext = cache.PNG  # caches before checksums held PNG images
    cache.save_array("embed", KEY, np.array([1.0, np.nan], dtype=np.float32), {})
    cache.save_image("protect", KEY, _image(0), {})
    cache.save_json("job", KEY, [1], {})
    for stage in ("protect", "embed", "job"):
        _legacy(cache, stage, KEY)
    Image.new("L", (16, 16)).save(cache.path("protect", KEY, cache.PNG))  # not what bench writes
    assert cache.load_array("embed", KEY) is None
    assert cache.load_image("protect", KEY) is None
    assert cache.load_json("job", KEY) is None


# -- 2. locks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["", "{\"host\": ", "[1, 2]", "{\"pid\": \"x\"}"])
def test_an_empty_or_unparsable_lock_is_stale_at_once(tmp_path, content):
    cache = ArtifactCache(tmp_path, stale_after=300.0)
    path = cache.path("protect", KEY, cache.LOCK)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert cache.try_lock("protect", KEY)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    cache.unlock("protect", KEY)


def test_a_lock_appears_with_its_content(tmp_path, monkeypatch):
    """A live lock is never empty: its content is written before it exists at its path."""
    cache = ArtifactCache(tmp_path)
    lock = cache.path("protect", KEY, cache.LOCK)
    seen = []
    real_fdopen = os.fdopen

    def watching_fdopen(fd, *args, **kwargs):
        seen.append(lock.exists())
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(benchmark.cache.os, "fdopen", watching_fdopen)
    assert cache.try_lock("protect", KEY)
    cache.unlock("protect", KEY)
    assert seen and not any(seen)


def test_breaking_a_stale_lock_spares_a_live_one_that_replaced_it(tmp_path, monkeypatch):
    """Two jobs find one dead lock; the first breaks it and takes its own; the second, renaming
    late, must put the first one's live lock back instead of breaking it too."""
    first, second = ArtifactCache(tmp_path), ArtifactCache(tmp_path)
    path = first.path("protect", KEY, first.LOCK)
    path.parent.mkdir(parents=True)
    path.write_text("")
    real_rename = os.rename

    def first_job_takes_it_meanwhile(src, dst):
        if not first._heartbeat.paths:
            real_rename(src, f"{dst}.first")
            os.unlink(f"{dst}.first")
            assert first.try_lock("protect", KEY)
        real_rename(src, dst)

    monkeypatch.setattr(benchmark.cache.os, "rename", first_job_takes_it_meanwhile)
    assert not second.try_lock("protect", KEY)
    assert path.exists() and json.loads(path.read_text())["pid"] == os.getpid()
    first.unlock("protect", KEY)


# -- 3. a stage folder that is a file -------------------------------------------------------------

def test_a_stage_folder_that_is_a_file_is_one_error_naming_it(tmp_path):
    cache = ArtifactCache(tmp_path)
    (tmp_path / "protect").write_text("")
    for attempt in (lambda: cache.save_image("protect", KEY, _image(0), {}),
                    lambda: cache.try_lock("protect", KEY),
                    cache.info, cache.clear):
        with pytest.raises(BenchError, match="expected a directory") as e:
            attempt()
        assert str(tmp_path / "protect") in str(e.value)
    assert cache.load_image("protect", KEY) is None  # reading it is a plain miss


# -- 4. a full disk -------------------------------------------------------------------------------

class _FullDisk:
    """A file whose every write fails as on a full disk."""

    def __init__(self, file):
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_one_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)
    cache.save_image("protect", KEY, _image(0), {})
    real_fdopen = os.fdopen
    monkeypatch.setattr(benchmark.cache.os, "fdopen",
                        lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(BenchError, match="no space left on device") as e:
        cache.save_image("protect", OTHER, _image(1), {})
    assert str(cache.path("protect", OTHER, ".json")) in str(e.value)
    with pytest.raises(BenchError, match="no space left on device"):
        cache.try_lock("protect", OTHER)
    monkeypatch.undo()
    leftovers = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert leftovers == [f"{KEY}.json", f"{KEY}{cache.IMAGE}"]
    assert torch.equal(cache.load_image("protect", KEY), _image(0))  # what was finished stays


def test_a_disk_that_fills_between_sidecar_and_payload_leaves_no_sidecar(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)
    real_fdopen = os.fdopen
    writes = []

    def full_after_one(fd, *args, **kwargs):
        writes.append(fd)
        file = real_fdopen(fd, *args, **kwargs)
        return file if len(writes) == 1 else _FullDisk(file)

    monkeypatch.setattr(benchmark.cache.os, "fdopen", full_after_one)
    with pytest.raises(BenchError, match="no space left on device") as e:
        cache.save_array("embed", KEY, VECTOR, {})
    assert str(cache.path("embed", KEY, cache.ARRAY)) in str(e.value)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# -- 5. bench cache clear -------------------------------------------------------------------------

def test_clearing_a_stage_that_is_not_there_names_the_stages_that_are(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_json("job", KEY, {}, {})
    cache.save_array("embed", KEY, VECTOR, {})
    with pytest.raises(BenchError, match="nope") as e:
        cache.clear(["nope"])
    assert "embed, job" in str(e.value)
    assert cache.clear(["job"]) == 1


def test_clear_refuses_to_delete_results_inside_the_cache(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_array("embed", KEY, VECTOR, {})
    cache.save_json("job", KEY, {}, {})
    results = tmp_path / "my_sweep" / "0"
    results.mkdir(parents=True)
    (results / "samples.csv").write_text("value\n1\n")
    stray = cache.path("job", KEY, ".json").parent / "notes"
    stray.mkdir()
    for stages, named in ((None, tmp_path / "my_sweep"), (["job"], stray)):
        with pytest.raises(BenchError, match="not a cache") as e:
            cache.clear(stages)
        assert str(named) in str(e.value)
    assert (results / "samples.csv").is_file() and cache.load_json("job", KEY) == {}
    assert cache.clear(["embed"]) == 1


def test_bench_cache_refusals_are_one_line(workdir):
    cache = ArtifactCache(workdir / "cache")
    cache.save_json("job", KEY, {}, {})
    proc = bench("cache", "clear", "--stage", "nope", "--yes", cwd=workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nope" in proc.stderr and "job" in proc.stderr
    (workdir / "cache" / "protect").write_text("")
    proc = bench("cache", "info", cwd=workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(workdir / "cache" / "protect") in proc.stderr


# -- end to end -----------------------------------------------------------------------------------

def test_a_corrupted_finished_run_is_recomputed_to_the_same_numbers(workdir):
    args = [*TINY, "defense=noise", "transform=jpeg", "metric=[psnr]", "pairs=[fidelity]"]
    bench("run", *args, "hydra.run.dir=first", cwd=workdir)
    cache = workdir / "cache"
    [record] = (cache / "job").rglob("*.record.json")
    _flip_a_byte(record, offset=len(record.read_bytes()) // 2)
    protected = min((cache / "protect").rglob(f"*{ArtifactCache.IMAGE}"))
    _another_image(protected)
    proc = bench("run", *args, "hydra.run.dir=second", cwd=workdir)
    assert str(record) in proc.stderr and str(protected) in proc.stderr
    stages = json.loads((workdir / "second" / "stats.json").read_text())["stages"]
    assert stages["job"]["computed"] == 1 and stages["protect"]["computed"] == 1
    first, second = (pd.read_csv(workdir / d / "samples.csv", dtype={"image_id": str})
                     for d in ("first", "second"))
    assert first.equals(second)


def test_locks_taken_before_a_failed_claim_are_released(tmp_path, monkeypatch):
    """A full disk while claiming the second entry: the first one's lock must not outlive the
    error (the next job of an in-process sweep would wait for it forever)."""
    cache = ArtifactCache(tmp_path)
    real_try_lock = cache.try_lock

    def full_on_the_second(stage, key):
        if key == OTHER:
            raise BenchError("no space left on device")
        return real_try_lock(stage, key)

    monkeypatch.setattr(cache, "try_lock", full_on_the_second)
    with pytest.raises(BenchError):
        cache.load_or_compute("embed", [KEY, OTHER], lambda k: None, lambda i: [VECTOR] * len(i))
    assert not list(tmp_path.rglob("*.lock"))


def test_without_hard_links_locks_are_off_not_broken(tmp_path, monkeypatch, caplog):
    def no_links(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    cache = ArtifactCache(tmp_path)
    monkeypatch.setattr(benchmark.cache.os, "link", no_links)
    with caplog.at_level(logging.WARNING, logger="benchmark.cache"):
        assert cache.try_lock("protect", KEY) and cache.try_lock("protect", OTHER)
    assert not cache.locking and len(_warnings(caplog)) == 1
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
