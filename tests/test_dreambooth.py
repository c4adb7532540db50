"""Anti-DreamBooth (ASPL, FSMG) and the DreamBooth generator that fits on a set (issue 28).

Tiny random-weight models: the tests check directions, caching and plumbing, not protection.
"""

import pytest
import torch
from conftest import bench
from omegaconf import open_dict

from benchmark import testing
from benchmark.images import to_pil
from benchmark.models.sd_ops import NoiseStreams

SEEDS = [3, 4]


@pytest.fixture
def frozen_noise(monkeypatch):
    """Every loss evaluation replays the same draws: the objective is a deterministic function."""
    monkeypatch.setattr(NoiseStreams, "frozen", True)


@pytest.mark.parametrize("name", ["aspl", "fsmg"])
def test_the_perturbation_raises_the_surrogates_denoising_loss(name, flipped, frozen_noise,
                                                               one_thread):
    defense = testing.build_component("defense", name)
    x = testing.portraits(2, 32)
    x_adv = defense.protect(x, SEEDS)
    assert (x_adv - x).abs().max() <= defense.pgd.eps + 1e-6
    assert (x_adv - x).abs().max() > 0
    model = defense.surrogate  # the surrogate its last PGD run attacked
    cond = model.condition(defense.tuning.instance_prompt, len(x))
    with torch.no_grad():
        def loss(v):
            return defense.surrogate_loss(model, v, NoiseStreams(SEEDS, v.device, name),
                                          cond).sum()

        before, after = loss(x), loss(x_adv)
    assert (after > before) != flipped, (name, float(before), float(after))


def test_aspl_continues_one_perturbation_over_its_rounds(one_thread):
    """Round 2 starts from round 1's perturbation (projected around x), not from x again."""
    x = testing.portraits(2, 32)
    one = testing.build_component("defense", "aspl", "defense.rounds=1").protect(x, SEEDS)
    two = testing.build_component("defense", "aspl", "defense.rounds=2").protect(x, SEEDS)
    eps = 6.375 / 255
    # 2 PGD steps of 0.6375/255 per round: after two rounds up to 4 steps from x
    assert (one - x).abs().max() <= 2 * 0.6375 / 255 + 1e-6
    assert (two - x).abs().max() > 2 * 0.6375 / 255 + 1e-6
    assert (two - x).abs().max() <= eps + 1e-6


def test_reference_values_of_aspl_and_fsmg():
    """Anti-DreamBooth's --pgd_eps=5e-2 and --pgd_alpha=5e-3 in [-1, 1] units, its rounds."""
    cfg = testing.compose("defense", "aspl", "scale=full").defense
    assert cfg.eps == pytest.approx(0.05 * 127.5) and cfg.step == pytest.approx(0.005 * 127.5)
    assert (cfg.rounds, cfg.surrogate_steps, cfg.pgd_steps, cfg.learning_rate) == (50, 3, 6, 5e-7)
    cfg = testing.compose("defense", "fsmg", "scale=full").defense
    assert (cfg.iterations, cfg.surrogate_steps, cfg.surrogate_batch) == (100, 1000, 2)
    cfg = testing.compose("generator", "dreambooth", "scale=full").generator
    assert (cfg.train_steps, cfg.train_batch_size, cfg.learning_rate) == (1000, 2, 5e-7)
    assert cfg.model == "stabilityai/stable-diffusion-2-1-base"


# -- the fit-on-a-set cache -------------------------------------------------------------------


def _job(tmp_path, root, *extra):
    from benchmark.runner import Job

    cfg = testing.compose("generator", "dreambooth", "dataset=folder", f"dataset.root={root}",
                          "dataset.resolution=32", "dataset.limit=null", "defense=none",
                          "metric=[psnr]", "pairs=[edit]", "progress=false", "threads=1", *extra)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.cache_dir = str(tmp_path / "cache")
    return Job(cfg)


def _fits(result) -> tuple[int, int]:
    fit = result.stats["stages"].get("fit", {"computed": 0, "cached": 0})
    return fit["computed"], fit["cached"]


def test_one_fit_per_set_cached_by_the_keys_of_the_whole_set(tmp_path, one_thread):
    root = tmp_path / "subject"
    root.mkdir()
    faces = testing.portraits(3, 32)
    for i, x in enumerate(faces):
        to_pil(x).save(root / f"{i}.png")
    # transform=identity: G(T(x_adv)) = G(x), one set; a job trains its model once
    first = _job(tmp_path, root, "transform=identity").run()
    assert _fits(first) == (1, 0)
    assert first.stats["stages"]["generate"]["computed"] == 3
    # other evaluation prompts: new images, the same model (no retrain)
    again = _job(tmp_path, root, "transform=identity", "generator.prompts=[a sks person]").run()
    assert _fits(again) == (0, 1)
    assert again.stats["stages"]["generate"]["computed"] == 3
    # a transformed set is another set: one new fit (the clean set's images are in the cache, so
    # its model is not even read)
    jpeg = _job(tmp_path, root, "transform=jpeg").run()
    assert _fits(jpeg) == (1, 0)
    assert jpeg.stats["stages"]["generate"] == {**jpeg.stats["stages"]["generate"],
                                                "computed": 3, "cached": 3}
    # a training setting changes every fit
    assert _fits(_job(tmp_path, root, "transform=identity",
                      "generator.learning_rate=1e-6").run()) == (1, 0)
    # one image of the set changed: one retrain of that set
    to_pil(faces[0].flip(-1)).save(root / "0.png")
    changed = _job(tmp_path, root, "transform=identity").run()
    assert _fits(changed) == (1, 0)
    # the outputs of the model trained on the changed set differ in every slot, not only slot 0
    assert changed.rows != first.rows


def test_the_clean_and_the_protected_sets_share_their_training_noise():
    from benchmark.fitting import set_seed

    clean = ["a", "b"]
    assert set_seed(0, clean, "generate") == set_seed(0, list(clean), "generate")
    assert set_seed(0, clean, "generate") != set_seed(1, clean, "generate")
    assert set_seed(0, clean, "generate") != set_seed(0, ["a", "c"], "generate")


def test_missing_class_images_are_one_line_errors(tmp_path):
    from benchmark.errors import BenchError

    with pytest.raises(BenchError, match="is not a folder") as e:
        testing.build_component("generator", "dreambooth",
                                f"generator.class_data_dir={tmp_path / 'none'}")
    assert "\n" not in str(e.value)
    (tmp_path / "classes").mkdir()
    to_pil(testing.portraits(1, 32)[0]).save(tmp_path / "classes" / "0.png")
    with pytest.raises(BenchError, match="holds 1 image.*num_class_images=2"):
        testing.build_component("defense", "aspl", f"defense.class_data_dir={tmp_path / 'classes'}",
                                "defense.num_class_images=2")
    # enough class images: prior preservation on, no notice
    generator = testing.build_component("generator", "dreambooth",
                                        f"generator.class_data_dir={tmp_path / 'classes'}",
                                        "generator.num_class_images=1")
    assert generator.class_images.shape == (1, 3, 32, 32) and generator.notice is None


# -- end to end -------------------------------------------------------------------------------


def test_tiny_aspl_against_dreambooth_prints_ism_fdfr_and_brisque_rows(workdir):
    out = bench("run", "experiment=tiny", "defense=aspl", "generator=dreambooth",
                "dataset.limit=2", "progress=false", "threads=1", cwd=workdir).stdout
    table = [line.split() for line in out.splitlines()]
    rows = {(r[0], r[1]) for r in table if len(r) >= 3}
    for metric in ("ism", "fdfr", "brisque"):
        assert ("fidelity", metric) in rows, (metric, out[-3000:])
    assert ("edit", "fdfr") in rows and ("edit", "brisque") in rows
    # random tiny models generate no faces: FDFR 1, and no ISM row for the generated images
    assert ("edit", "ism") not in rows
    assert "fit 4 computed / 0 cached" in out
    again = bench("run", "experiment=tiny", "defense=aspl", "generator=dreambooth",
                  "dataset.limit=2", "progress=false", "threads=1", "generator.prompts=[a sks person]",
                  cwd=workdir).stdout
    assert "fit 0 computed / 4 cached" in again and "protect 0 computed" in again
