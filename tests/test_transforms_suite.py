"""Every transform config: strength form, identity at 0, monotone damage, sizes, batching,
its sweep line, and out-of-range values rejected at build time."""

import copy
import functools
import itertools
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.build import build
from benchmark.errors import ConfigValueError
from benchmark.paths import config_dir

FOLDER = config_dir() / "transform"
MODEL_BASED = {"noisy_upscale", "diffpure", "gridpure", "impress",  # tested with tiny models
               "tip_rsr", "tip_rsr_no_face"}  # (tests/test_tip_rsr.py)
NAMES = sorted(p.stem for p in FOLDER.glob("*.yaml") if p.stem not in MODEL_BASED)
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@functools.cache
def composed(name: str) -> dict:
    """`transform=<name>` as a run composes it (full scale, on the CPU)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"transform={name}", "scale=full", "device=cpu"])
    return OmegaConf.to_container(cfg, resolve=True)["transform"]


def config(name, **overrides):
    return {**copy.deepcopy(composed(name)), **overrides}


def make(name, **overrides):
    return build(config(name, **overrides), name)


def psnr(a, b):
    mse = ((a.double() - b.double()) ** 2).mean()
    return float(10 * torch.log10(1 / mse)) if mse > 0 else float("inf")


def test_the_suite_is_complete():
    expected = {"identity", "resize", "jpeg", "webp", "jpeg_social", "quantize", "bit_depth",
                "chroma_subsample", "blur", "box_blur", "median", "noise", "brightness",
                "contrast", "saturation", "gamma", "rotate", "crop", "display", "platform",
                "chain", "purify", "diff_resize", "diff_blur", "diff_jpeg"}
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_first_comment_line_describes_it(name):
    first = (FOLDER / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("# ") and 40 <= len(first) <= 100


@pytest.mark.parametrize("name", [n for n in NAMES if n != "identity"])
def test_strength_zero_is_the_identity_and_damage_grows(portraits64, name):
    x = portraits64
    seeds = [1, 2, 3]
    untouched = make(name, strength=0)
    assert untouched.is_identity and untouched(x, seeds) is x
    values = [psnr(make(name, strength=s)(x, seeds), x) for s in STRENGTHS[1:]]
    # Monotone: PSNR to the input never rises by more than 0.05 dB as strength grows
    # (steps of integer parameters may repeat a level), and falls overall.
    assert all(b <= a + 0.05 for a, b in itertools.pairwise(values)), values
    assert values[-1] < values[0] - 0.5, values


def _sweep(name):
    """The `# sweep:` line of a config: (key, [values])."""
    text = (FOLDER / f"{name}.yaml").read_text()
    match = re.search(r"^# sweep: '?transform\.(\w+)=([^\s']+)", text, re.MULTILINE)
    return match and (match.group(1), match.group(2))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "identity"])
def test_sweep_line_values_build(name, portraits64):
    sweep = _sweep(name)
    assert sweep, f"{name}.yaml has no '# sweep: transform.KEY=V1,V2' line"
    key, values = sweep
    if key == "steps":
        return  # lists of steps: tested with chain
    assert key in config(name), f"{name}: sweep key {key} is not a parameter"
    for raw in values.split(","):
        value = OmegaConf.create({"v": raw}).v if ":" in raw else \
            OmegaConf.create(f"v: {raw}").v
        t = make(name, **{key: value})
        assert t(portraits64[:1], [0]).shape == portraits64[:1].shape


@pytest.mark.parametrize("name", NAMES)
def test_odd_sizes_keep_their_size(name):
    x = torch.rand(2, 3, 47, 63, generator=torch.Generator().manual_seed(0))
    t = make(name)
    y = t(x, [4, 5])
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0 <= float(y.min()) and float(y.max()) <= 1


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_one_at_a_time(portraits64, name):
    """An image's output depends on itself and its seed, never on its batch mates."""
    x = portraits64
    seeds = [7, 8, 9]
    t = make(name)
    batched = t(x, seeds)
    single = torch.cat([t(x[i:i + 1], [seeds[i]]) for i in range(len(x))])
    assert torch.allclose(batched, single, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_bad_strength_is_rejected(name):
    for bad in (-0.1, 1.5, "high"):
        with pytest.raises(ConfigValueError, match=r"strength=.*\[0, 1\]"):
            make(name, strength=bad)


BAD = [
    ("resize", "factor", 0, "0 < factor"), ("resize", "factor", 9, "factor <= 8"),
    ("resize", "interpolation", "cubic", "bicubic"), ("resize", "library", "skimage", "opencv"),
    ("resize", "antialias", False, "no antialias switch"),
    ("diff_resize", "interpolation", "lanczos", "no Lanczos"),
    ("jpeg", "quality", 0, "1..100"), ("jpeg", "quality", 101, "1..100"),
    ("jpeg", "quality", 7.5, "integer"), ("jpeg", "subsampling", "4:1:1", "4:2:0"),
    ("jpeg", "optimize", "yes", "true or false"),
    ("webp", "quality", 101, "0..100"), ("webp", "method", 7, "0..6"),
    ("jpeg_social", "qualities", [0, 50], "1..100"),
    ("jpeg_social", "frequencies", [0.5], "one per quality"),
    ("quantize", "colors", 1, "2..256"), ("quantize", "colors", 300, "2..256"),
    ("quantize", "method", "kmeans", "mediancut"), ("quantize", "dither", "ordered", "none"),
    ("quantize", "kmeans", -1, "0..1000"),
    ("bit_depth", "bits", 0, "1..8"), ("bit_depth", "bits", 9, "1..8"),
    ("chroma_subsample", "subsampling", "4:3:0", "4:2:0"),
    ("blur", "sigma", -1, "0 <= sigma"), ("blur", "library", "scipy", "kornia"),
    ("box_blur", "radius", 1.5, "integer radius"),
    ("median", "size", 4, "odd integer"), ("median", "library", "kornia", "opencv"),
    ("noise", "sigma", -0.1, "[0, 1]"), ("noise", "sigma", 2, "[0, 1]"),
    ("brightness", "factor", -1, "[0, 10]"), ("contrast", "factor", 11, "[0, 10]"),
    ("saturation", "factor", -0.5, "[0, 10]"), ("gamma", "gamma", 0, "0 < gamma"),
    ("rotate", "angle", 400, "[-360, 360]"), ("rotate", "fill", "mirror", "crop"),
    ("rotate", "interpolation", "lanczos", "bicubic"),
    ("crop", "scale", 0, "0 < scale"), ("crop", "scale", 1.5, "scale <= 1"),
    ("crop", "position", "corner", "random"),
    ("display", "scale", 2, "scale <= 1"), ("display", "save", "gif", "png"),
    ("display", "quality", 0, "1..100"),
    ("platform", "max_side", 0, "1..65500"), ("platform", "quality", 101, "1..100"),
    ("purify", "scale", 0, "0 < scale"), ("purify", "colour", "gif", "palette"),
    ("purify", "bits", 9, "1..8"), ("purify", "median", 4, "odd window"),
    ("purify", "blur", -1, "blur <= 10"), ("purify", "sharpen", 600, "0 (off)..500"),
    ("diff_jpeg", "quality", 0, "[1, 100]"),
    ("chain", "steps", [], "non-empty list"), ("chain", "restore", "no", "true or false"),
]


CONTEXT = {("box_blur", "radius"): {"library": "opencv"}, ("purify", "bits"): {"colour": "bits"}}


@pytest.mark.parametrize("name,key,value,expected", BAD, ids=[f"{b[0]}.{b[1]}={b[2]}" for b in BAD])
def test_out_of_range_values_name_key_value_and_range(name, key, value, expected):
    overrides = {key: value, **CONTEXT.get((name, key), {})}
    with pytest.raises(ConfigValueError) as e:
        make(name, **overrides)
    message = str(e.value)
    assert f"{key}={value!r}" in message and expected in message, message
