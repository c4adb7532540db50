"""The defense configs: published defaults, their cards, composition, validation, listing.

Each default has one home, its value in configs/defense/NAME.yaml. The config's card
(`_card_`, benchmark/cards.py) states the reference's own value, its units and source; these
tests, one per config file of the group, check that the card's value converted to pixel units
out of 255 (x 127.5 for [-1, 1] units, x 255 for [0, 1]) is the YAML's, that the class's
signature defaults agree with the YAML (or the card says why this config differs), and that the
card never reaches a constructor or a cache key. A mistyped value in the YAML, a wrong
conversion or a drifted signature default fails.
"""

import importlib
import inspect
import re

import numpy as np
import pytest
from conftest import bench
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from benchmark import cards
from benchmark.build import build
from benchmark.defenses.assets import default_pattern, make_pattern
from benchmark.errors import ConfigValueError
from benchmark.paths import config_dir
from benchmark.provenance import weights

# the config group is the registry: every defense it holds
DEFENSES = sorted(p.stem for p in (config_dir() / "defense").glob("*.yaml"))
NO_PAPER = {"none", "noise"}  # baselines: no reference to cite


def composed(name: str) -> dict:
    """The defense's config at its published budget (`scale=full`), as Hydra composes it
    (the group file it extends merged in), interpolations left as written."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"defense={name}", "scale=full"])
    return OmegaConf.to_container(cfg, resolve=False)["defense"]


def target_class(config: dict) -> type:
    module, _, name = config["_target_"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)):
        return a == b
    return isinstance(b, (int, float)) and b == pytest.approx(a, rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def configs() -> dict[str, dict]:
    return {name: composed(name) for name in DEFENSES}


@pytest.mark.parametrize("name", DEFENSES)
def test_the_cards_reference_values_convert_to_the_yaml(name, configs):
    config = configs[name]
    card = config.get(cards.CARD_KEY) or {}
    assert name == "none" or card, f"{name}.yaml has no {cards.CARD_KEY}"
    for key, entry in (card.get("reference") or {}).items():
        assert key in config, f"{name}: the card names {key!r}, which the YAML does not set"
        assert entry.get("source"), f"{name}.{key}: the card gives no source"
        assert "here" not in entry or entry.get("why"), f"{name}.{key}: `here` without `why`"
        expected = cards.converted(entry)
        assert same(expected, config[key]), (
            f"{name}.{key}: the YAML holds {config[key]!r}; the card's reference "
            f"{entry.get('value')!r} {entry.get('units') or ''} converts to {expected!r}")
    assert weights({"card": card}) == {}, "a card key names a model: provenance would record it"
    module = importlib.import_module(target_class(config).__module__)
    for constant, entry in (card.get("constants") or {}).items():
        assert same(cards.converted(entry), getattr(module, constant)), (name, constant)


@pytest.mark.parametrize("name", DEFENSES)
def test_the_class_keeps_no_other_default(name, configs):
    """Every scalar the YAML sets equals the class's signature default for it, unless the card
    lists the key under `variant` (this config's choice, with why), where it must differ."""
    config = configs[name]
    variant = (config.get(cards.CARD_KEY) or {}).get("variant") or {}
    parameters = inspect.signature(target_class(config).__init__).parameters
    for key, value in config.items():
        if key.startswith("_") or (isinstance(value, str) and "${" in value):
            continue  # the job's values (device, precision, dataset) are not the class's
        assert key in parameters, f"{name}: {key} is not a parameter of {config['_target_']}"
        default = parameters[key].default
        if default is inspect.Parameter.empty or (default is None
                                                   and isinstance(value, (list, dict))):
            continue  # required, or None standing for an empty list / dict
        if key in variant:
            assert not same(default, value), f"{name}: {key} is listed as a variant but equals"
        else:
            assert same(default, value), (
                f"{name}: the YAML's {key}={value!r} but the class's default is {default!r}")
    assert set(variant) <= set(config), (name, set(variant) - set(config))


@pytest.mark.parametrize("name", sorted(set(DEFENSES) - NO_PAPER))
def test_every_card_cites_its_paper_and_the_references_precision(name, configs):
    card = configs[name][cards.CARD_KEY]
    for field in ("paper", "authors", "year", "venue", "code", "attacks", "objective",
                  "precision", "reference"):
        assert card.get(field), f"{name}: the card has no {field}"
    assert card.get("arxiv") is None or str(card["arxiv"]).replace(".", "").isdigit()
    assert str(target_class(configs[name]).reference_precision) == card["precision"]


@pytest.mark.parametrize("name", DEFENSES)
def test_the_card_reader_composes_as_hydra_does(name, configs):
    """bench ls and the docs read cards without Hydra: the same card and values."""
    read = cards.read(config_dir() / "defense" / f"{name}.yaml")
    assert read.get(cards.CARD_KEY) == configs[name].get(cards.CARD_KEY)
    for key in ("eps", "step", "iterations", "norm", "lr", "grad_samples", "schedule",
                "final_step_fraction"):
        assert read.get(key) == configs[name].get(key), (name, key)


def test_units_convert_as_the_design_says():
    assert cards.converted({"value": 0.06, "units": "[-1,1]"}) == pytest.approx(7.65)
    assert cards.converted({"value": 0.025, "units": "[0,1]"}) == pytest.approx(6.375)
    assert cards.converted({"value": "16/255", "units": "[-1,1]"}) == pytest.approx(8)
    assert cards.converted({"value": 35, "units": "%"}) == pytest.approx(0.35)
    assert cards.converted({"value": "a", "here": "b", "why": "w"}) == "b"
    with pytest.raises(ValueError, match="unknown units"):
        cards.converted({"value": 1, "units": "[-1, 1]"})


# -- the card is documentation: never a constructor's argument, never in a cache key ------------


def test_a_card_neither_reaches_the_class_nor_changes_a_cache_key():
    from benchmark.cache import cache_key
    from benchmark.results.job_files import config_fingerprint

    plain = {"_target_": "benchmark.defenses.noise.UniformNoise", "eps": 8.0}
    carded = {**plain, cards.CARD_KEY: {"paper": "P", "reference": {"eps": {"value": 8}}}}
    edited = {**plain, cards.CARD_KEY: {"paper": "another title", "deviations": ["new"]}}
    assert build(carded, "defense").eps == build(plain, "defense").eps  # no TypeError: not passed
    keys = {cache_key("protect", c, "1", ["in"], 0) for c in (plain, carded, edited)}
    assert len(keys) == 1
    nested = {"defense": {**plain, "eot": [{**carded, cards.CARD_KEY: {"x": 1}}]}}
    assert cache_key("job", nested, "1", [], 0) == cache_key(
        "job", {"defense": {**plain, "eot": [plain]}}, "1", [], 0)
    assert config_fingerprint({"defense": carded}) == config_fingerprint({"defense": plain})
    assert weights({"defense": {**carded, cards.CARD_KEY: {"reference": {
        "model": {"value": "runwayml/x"}}}}}) == {}


def test_every_cards_keys_stay_out_of_the_jobs_cache_key():
    """The resolved config a job hashes: the same with the card as without."""
    from benchmark.cache import cache_key

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["defense=facelock", "scale=full"])
    resolved = OmegaConf.to_container(cfg.defense, resolve=True)
    assert cards.CARD_KEY in resolved
    assert cache_key("protect", resolved, "1", [], 0) == cache_key(
        "protect", cards.without_cards(resolved), "1", [], 0)


# -- composition, validation, listing -------------------------------------------------------------


def compose_tiny(defense: str, *overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=["experiment=tiny", f"defense={defense}", "device=cpu",
                                             *overrides])


def leaves(node, key: str):
    """Every value stored under `key` at any depth of a config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and not isinstance(v, (dict, list)):
                yield v
            yield from leaves(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from leaves(v, key)


@pytest.mark.parametrize("name", DEFENSES)
def test_every_defense_builds_at_the_tiny_scale(name):
    cfg = compose_tiny(name)
    defense = build(cfg.defense, "defense")
    assert callable(defense.protect)
    resolved = OmegaConf.to_container(cfg, resolve=True)["defense"]
    models = list(leaves(resolved, "model"))
    assert all(m in (None, "random") or str(m).startswith("tiny/") for m in models), (
        "the tiny scale must not need real weights", models)
    assert all(i <= 10 for i in leaves(resolved, "iterations"))


@pytest.mark.parametrize("name, override", [
    ("advdm", "defense.eps=-1"), ("mist", "defense.mode=stylish"),
    ("sds", "defense.direction=up"), ("photoguard_diffusion", "defense.norm=l1"),
    ("diffusionguard", "defense.contour_rounds=1"), ("editshield", "defense.lr=0"),
    ("facelock", "defense.identity_from=2"), ("photoguard_encoder_inpaint",
                                              "defense.mask.region=hair"),
])
def test_bad_values_stop_the_build(name, override):
    with pytest.raises(ConfigValueError):
        build(compose_tiny(name, override).defense, "defense")


def test_bench_ls_lists_every_defense_with_its_budget(tmp_path, configs):
    """Each line shows the YAML's budget (and the reference's units, from the card)."""
    out = bench("ls", "defense", cwd=tmp_path).stdout
    for name in DEFENSES:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        config = configs[name]
        if cards.CARD_KEY not in config:  # a config without a card: its first comment line
            assert re.search(r"eps \d|no budget|no protection", line), line
            continue
        if "eps" not in config:
            assert "no protection" in line or cards.CARD_KEY not in config, line
            continue
        budget = cards.budget_cells(config)["budget"]
        assert ("no budget" if budget == "none" else f"eps {budget}") in line, line
        if "iterations" in config:
            assert f"{config['iterations']} iterations" in line, line


def test_the_shipped_pattern_is_the_generators_output():
    shipped = np.asarray(Image.open(default_pattern()).convert("RGB"))
    assert shipped.shape == (512, 512, 3)
    assert np.array_equal(shipped, make_pattern())
    assert shipped.std() > 60  # high contrast: a texture, not a flat image
