import json

import numpy as np
import torch

from benchmark.cache import ArtifactCache, cache_key
from benchmark.images import release

CFG = {"_target_": "benchmark.transforms.jpeg.JpegCompression", "quality": 75, "device": "cpu"}


def test_key_is_canonical_and_sensitive_to_what_changes_the_output():
    base = cache_key("transform", CFG, "1", ["abc"], 7)
    assert base == cache_key("transform", dict(reversed(list(CFG.items()))), "1", ["abc"], 7)
    assert base == cache_key("transform", {**CFG, "device": "cuda"}, "1", ["abc"], 7)
    changed = [
        cache_key("protect", CFG, "1", ["abc"], 7),
        cache_key("transform", {**CFG, "quality": 50}, "1", ["abc"], 7),
        cache_key("transform", CFG, "2", ["abc"], 7),
        cache_key("transform", CFG, "1", ["abd"], 7),
        cache_key("transform", CFG, "1", ["abc"], 8),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_image_round_trip_is_exact_after_release(tmp_path):
    cache = ArtifactCache(tmp_path)
    x = release(torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(0)))
    cache.save_image("protect", "ab" * 32, x, {"config": CFG})
    assert torch.equal(cache.load_image("protect", "ab" * 32), x)
    sidecar = json.loads(cache.path("protect", "ab" * 32, ".json").read_text())
    assert sidecar["config"]["quality"] == 75 and sidecar["stage"] == "protect"
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written left behind


def test_missing_or_corrupt_entries_read_as_misses(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert cache.load_image("protect", "cd" * 32) is None
    path = cache.path("protect", "cd" * 32, ".png")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a png")
    assert cache.load_image("protect", "cd" * 32) is None
    assert cache.load_array("embed", "ef" * 32) is None


def test_info_and_clear(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.save_image("protect", "01" * 32, torch.zeros(3, 4, 4), {})
    cache.save_array("embed", "02" * 32, np.ones(5, dtype=np.float32), {})
    cache.save_json("job", "03" * 32, {"rows": []}, {})
    info = cache.info()
    assert {k: v["entries"] for k, v in info.items()} == {"embed": 1, "job": 1, "protect": 1}
    assert cache.clear(["embed"]) == 1 and "embed" not in cache.info()
    assert cache.clear() == 2 and cache.info() == {}
