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


def test_keys_stay_what_earlier_versions_computed():
    """A cache filled by an earlier version stays valid: this key was computed by the code
    before the runtime keys moved to benchmark.build (5fe06c5). A change here must be deliberate
    (and bump the versions it invalidates). It pins cache_key() for a given version string; the
    version a job passes carries the component's code digest since d181d13 (every runtime key
    changed once then), pinned in tests/test_cache_code_keys.py."""
    config = {**CFG, "inner": {"max_batch": 4, "x": [1, {"compile": True, "y": 2}]}}
    assert cache_key("transform", config, "1", ["abc"], 7) == (
        "9bed86ed4d7bce4e6d198c110a2645a838c906c4c6093a7598472e1a27898592")


# Component parameters named like a runtime key, each reviewed: it changes where or how fast
# the component runs, never its output (device: everywhere).
REVIEWED_RUNTIME_PARAMETERS = {
    ("benchmark.generators.attgan.AttGAN", "max_batch"),
    ("benchmark.generators.dreambooth.DreamBooth", "max_batch"),  # sampling chunks, own seeds
    ("benchmark.generators.gan.GanEditor", "max_batch"),
    ("benchmark.generators.stargan.StarGAN", "max_batch"),
    ("benchmark.generators.talking_head.TalkingHeadGenerator", "max_batch"),
    ("benchmark.generators.diffusion.DiffusionEditor", "max_batch"),
    ("benchmark.generators.diffusion.DiffusionEditor", "compile"),
    ("benchmark.models.sd_pipeline.PipelineEditor", "max_batch"),
    ("benchmark.models.sd_pipeline.PipelineEditor", "compile"),
    ("benchmark.transforms.diffpure.DiffPure", "max_batch"),
    ("benchmark.transforms.gridpure.GrIDPure", "max_batch"),
    ("benchmark.transforms.noisy_upscale.NoisyUpscale", "max_batch"),
}


def runtime_named_parameters() -> set[tuple[str, str]]:
    import importlib
    import inspect
    import pkgutil

    from benchmark.build import COMPONENT_PACKAGES, RUNTIME_KEYS

    found = set()
    for package in COMPONENT_PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__,
                                          f"{package}."):
            module = importlib.import_module(info.name)
            for cls in vars(module).values():
                if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                    continue
                try:
                    parameters = inspect.signature(cls.__init__).parameters
                except (TypeError, ValueError):
                    continue
                found |= {(f"{cls.__module__}.{cls.__qualname__}", p) for p in parameters
                          if p in RUNTIME_KEYS and p != "device"}
    return found


def test_every_parameter_the_cache_key_leaves_out_is_reviewed():
    """The cache drops device, batch_size, max_batch, compile and progress at every depth of a
    config. A new component parameter with one of those names would silently leave the key (as
    CMUA's training batch_size once did, now watermark_batch): rename it, or review it here."""
    found = runtime_named_parameters()
    assert ("benchmark.transforms.diffpure.DiffPure", "max_batch") in found  # the walk sees them
    assert found == REVIEWED_RUNTIME_PARAMETERS, (
        f"not reviewed: {sorted(found - REVIEWED_RUNTIME_PARAMETERS)}; "
        f"gone: {sorted(REVIEWED_RUNTIME_PARAMETERS - found)}")
