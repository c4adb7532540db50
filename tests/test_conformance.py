"""Every config of every component group keeps its kind's contracts (benchmark.testing).

The config group is the registry: a new defense, transform, generator or metric is covered
here without editing this file. A component that cannot be built here for want of real
weights (noisy_upscale's SD x4 upscaler, CLIP, LPIPS's AlexNet) is skipped with the reason.
"""

import pytest
import torch

from benchmark import testing
from benchmark.errors import MissingModelError
from benchmark.paths import config_dir


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small tiny-model calls: one thread is fastest here
    yield
    torch.set_num_threads(threads)


def run(check, name: str, **kwargs) -> list[str]:
    try:
        return check(name, **kwargs)
    except MissingModelError as e:
        pytest.skip(f"needs real weights: {str(e).splitlines()[0]}")
    except testing.ContractError as e:
        if "is unavailable here" in str(e):
            pytest.skip(str(e).splitlines()[0])
        raise


@pytest.mark.parametrize("name", names("defense"))
def test_every_defense_keeps_the_defense_contract(name):
    kept = run(testing.check_defense, name)
    assert kept[0] == "output"


# TIP-RSR restores faces, and the tiny scale's 64 px holds none that it detects
IMAGES = {"tip_rsr": (2, 256)}


@pytest.mark.parametrize("name", names("transform"))
def test_every_transform_keeps_the_transform_contract(name):
    size = IMAGES.get(name)
    run(testing.check_transform, name, images=testing.portraits(*size) if size else None)


@pytest.mark.parametrize("name", names("generator"))
def test_every_generator_keeps_the_generator_contract(name):
    run(testing.check_generator, name)


@pytest.mark.parametrize("name", names("metric"))
def test_every_metric_keeps_the_metric_contract(name):
    from benchmark.errors import BenchError

    try:
        run(testing.check_metric, name)
    except BenchError as e:  # building it already says it is unavailable
        if "unavailable" not in str(e):
            raise
        pytest.skip(str(e).splitlines()[0])


def test_cache_keys_are_the_same_in_another_process():
    from omegaconf import OmegaConf

    from benchmark.build import build
    from benchmark.cache import cache_key

    configs = {}
    for group in ("defense", "transform", "generator"):
        for name in names(group):
            cfg = OmegaConf.to_container(testing.compose(group, name)[group], resolve=True)
            try:
                version = build(cfg, group).version
            except MissingModelError:
                continue
            configs[f"{group}={name}"] = (cfg, version)
    here = {n: cache_key("protect", c, v, ["x"], 0) for n, (c, v) in configs.items()}
    assert len(here) > 50
    assert testing.cache_keys_elsewhere(configs) == here


# -- the suite itself must be able to fail ----------------------------------------------------

def test_a_defense_over_its_budget_or_batch_dependent_breaks_its_contract(monkeypatch):
    from benchmark.defenses.noise import UniformNoise

    honest = UniformNoise.protect

    def cheating(self, x, seeds):
        # twice the budget, and a shift that depends on the batch's mean
        return (x + 2 * (honest(self, x, seeds) - x) + 0.05 * x.mean()).clamp(0, 1)

    monkeypatch.setattr(UniformNoise, "protect", cheating)
    with pytest.raises(testing.ContractError) as e:
        testing.check_defense("noise")
    assert "budget: linf size" in str(e.value) and "batch:" in str(e.value)


def test_a_random_component_that_ignores_its_seeds_breaks_its_contract(monkeypatch):
    from benchmark.defenses.noise import UniformNoise

    monkeypatch.setattr(UniformNoise, "protect",
                        lambda self, x, seeds: (x + self.eps / 2).clamp(0, 1))
    with pytest.raises(testing.ContractError, match="seeds: another seed gave the same"):
        testing.check_defense("noise")


def test_an_exemption_is_reported_with_its_reason(monkeypatch):
    from benchmark.defenses.noise import UniformNoise

    monkeypatch.setattr(UniformNoise, "protect",
                        lambda self, x, seeds: (x + self.eps / 2).clamp(0, 1))
    monkeypatch.setattr(UniformNoise, "contract_exemptions", {"seeds": "a constant offset"},
                        raising=False)
    kept = testing.check_defense("noise")
    assert "seeds (exempt: a constant offset)" in kept


def test_a_metric_that_prefers_different_images_breaks_its_contract(monkeypatch):
    from benchmark.metrics.pixel import PSNR

    honest = PSNR.update
    monkeypatch.setattr(PSNR, "update", lambda self, a, b: -honest(self, a, b))
    with pytest.raises(testing.ContractError, match="identical inputs"):
        testing.check_metric("psnr")
