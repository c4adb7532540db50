"""`chain`: steps by name, by name with overrides, or as full configs; sizes; seeds; cache identity."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.build import build
from benchmark.errors import BenchError, ConfigValueError
from benchmark.images import derive_seed
from benchmark.paths import config_dir
from benchmark.transforms.chain import Chain, transform_config
from benchmark.transforms.jpeg import JpegCompression
from benchmark.transforms.noise import GaussianNoise
from benchmark.transforms.resize import Rescale


def test_steps_by_name_apply_the_group_configs_in_order(portraits64):
    x = portraits64
    y = Chain(steps=["resize", "jpeg"])(x)
    assert torch.equal(y, JpegCompression(quality=75)(Rescale(factor=0.5)(x)))
    assert not torch.equal(y, Chain(steps=["jpeg", "resize"])(x))


def test_steps_with_overrides_and_full_configs(portraits64):
    x = portraits64
    y = Chain(steps=[{"resize": {"factor": 0.25}}, {"jpeg": {"quality": 30}}])(x)
    assert torch.equal(y, JpegCompression(quality=30)(Rescale(factor=0.25)(x)))
    full = {"_target_": "benchmark.transforms.jpeg.JpegCompression", "quality": 30}
    assert torch.equal(Chain(steps=[{"resize": {"factor": 0.25}}, full])(x), y)


def test_a_step_that_keeps_a_small_size_is_restored_at_the_end(portraits64):
    """Upload small, compress small, view big: the chain hands back the input size."""
    x = portraits64
    y = Chain(steps=[{"resize": {"restore": False}}, "jpeg"])(x)
    assert y.shape == x.shape
    small = Chain(steps=[{"resize": {"restore": False}}, "jpeg"], restore=False)
    assert small.changes_size and small(x).shape[-2:] == (32, 32)
    diff = Chain(steps=[{"diff_resize": {"restore": False}}, "diff_jpeg"])
    assert diff.differentiable and diff(x).shape == x.shape


def test_random_steps_draw_their_own_seeds(portraits64):
    x = portraits64[:1]
    twice = Chain(steps=[{"noise": {"sigma": 0.02}}, {"noise": {"sigma": 0.02}}])
    assert twice.random
    y = twice(x, [3])
    first = GaussianNoise(sigma=0.02)(x, [derive_seed(3, "step0", "chain")])
    assert torch.equal(y, GaussianNoise(sigma=0.02)(first, [derive_seed(3, "step1", "chain")]))
    assert torch.equal(twice(x, [3]), y) and not torch.equal(twice(x, [4]), y)


def test_strength_reaches_every_step(portraits64):
    c = Chain(steps=["resize", "jpeg"], strength=0.5)
    assert c.steps[0].factor == 0.625 and c.steps[1].quality == 50
    assert Chain(steps=["resize", "jpeg"], strength=0).is_identity


def test_version_follows_the_steps_configs():
    a = Chain(steps=["jpeg"]).version
    assert a == Chain(steps=["jpeg"]).version
    assert a != Chain(steps=[{"jpeg": {"quality": 50}}]).version


def test_bad_steps_are_named():
    with pytest.raises(BenchError, match=r"chain.steps\[1\].*'nope'.*jpeg"):
        Chain(steps=["resize", "nope"])
    with pytest.raises(ConfigValueError, match="quality=0"):
        Chain(steps=[{"jpeg": {"quality": 0}}])
    with pytest.raises(BenchError, match="a step is"):
        Chain(steps=[42])


def test_chain_from_hydra_overrides(portraits64):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["transform=chain",
                                           "transform.steps=[resize,{jpeg:{quality:50}}]"])
    t = build(cfg.transform, "transform")
    assert torch.equal(t(portraits64), JpegCompression(quality=50)(Rescale()(portraits64)))


def test_size_changing_transforms_run_in_a_job(workdir):
    """In a job, the fidelity pair compares T(x_adv) with x: every size-changing transform
    restores the input size by default (crop, platform, chain of a small resize + JPEG)."""
    from benchmark.runner import Job

    for transform in (["transform=crop"], ["transform=platform", "transform.max_side=32"],
                      ["transform=chain", "transform.steps=[{resize:{restore:false}},jpeg]"]):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("config", overrides=[
                "defense=noise", *transform, "metric=[psnr,ssim]", "dataset.resolution=64",
                "dataset.limit=2", "progress=false", "device=cpu", f"cache_dir={workdir}/c"])
        result = Job(cfg).run()
        values = [r["value"] for r in result.rows if r["pair"] == "fidelity"]
        assert len(values) == 4 and all(0 < v < 100 for v in values), (transform, values)


def test_a_named_step_is_composed_at_the_jobs_scale_and_device():
    """`experiment=tiny transform=chain transform.steps=[jpeg,diffpure]` gets the tiny
    diffpure, as `transform=diffpure` would, on the job's device."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=tiny", "device=cpu", "transform=chain",
                                           "transform.steps=[jpeg,{diffpure:{steps:10}}]"])
        alone = compose("config", overrides=["experiment=tiny", "device=cpu",
                                             "transform=diffpure"])
        chain = build(cfg.transform, "transform")  # composed through the app's Hydra
    expected = OmegaConf.to_container(alone, resolve=True)["transform"]
    assert chain.configs[1] == {**expected, "steps": 10}
    assert chain.configs[1]["model"] == "tiny/sd" and chain.configs[1]["device"] == "cpu"
    full = transform_config("diffpure", "chain.steps[0]", scale="full", device="cuda:1")
    assert full["model"] != "tiny/sd" and full["device"] == "cuda:1"


def test_an_unknown_scale_is_named():
    with pytest.raises(BenchError, match=r"chain.steps\[0\]: no scale config named 'huge'.*tiny"):
        Chain(steps=["jpeg"], scale="huge")


def test_a_steps_runtime_keys_leave_the_chains_identity():
    """Where and how fast a step runs (device, max_batch) is not what it computes: the chain's
    version, part of its cache key, ignores them as the cache does; a real parameter counts."""
    tiny = {"scale": "tiny", "device": "cpu"}
    base = Chain(steps=["diffpure"], **tiny).version
    assert Chain(steps=[{"diffpure": {"max_batch": 2}}], **tiny).version == base
    assert Chain(steps=[{"diffpure": {"t": 50}}], **tiny).version != base


def test_a_runs_scale_is_named_by_its_choice(tmp_path):
    """`bench run scale=mine` with a user's scale file: chain steps are composed at `mine`
    (its file need not say so); a copied file naming another scale is refused."""
    from benchmark.cli import name_the_scale

    cfg = OmegaConf.create({"scale": {}, "transform": {"scale": "${scale.name}"}})
    OmegaConf.set_struct(cfg, True)
    name_the_scale(cfg, "mine")
    assert cfg.transform.scale == "mine"
    name_the_scale(cfg, "mine")  # named right: nothing to do
    copied = OmegaConf.create({"scale": {"name": "tiny"}})
    with pytest.raises(BenchError, match="scale=mine: its file sets name: 'tiny'; set name: mine"):
        name_the_scale(copied, "mine")


def test_a_nested_chain_given_in_full_runs_at_the_outer_chains_scale():
    inner = {"_target_": "benchmark.transforms.chain.Chain", "steps": ["diffpure"]}
    outer = Chain(steps=[inner], scale="tiny", device="cpu")
    assert outer.steps[0].configs[0]["model"] == "tiny/sd"
    pinned = Chain(steps=[{**inner, "scale": "tiny"}], scale="full", device="cpu")
    assert pinned.steps[0].configs[0]["model"] == "tiny/sd"  # its own scale wins
