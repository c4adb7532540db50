"""generator.target=all: one job, one edit per target, each with the label and the cache
entries that a sweep over generator.target gives."""

import pandas as pd
from conftest import TINY
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from benchmark.paths import config_dir
from benchmark.runner import Job

TARGETS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]


def run(tmp_path, target: str, defense: str = "none"):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[
            "experiment=tiny", *TINY, "generator=stargan", f"generator.target={target}",
            f"defense={defense}", "metric=[ssim,psnr]", "pairs=[edit,protection,fidelity]",
            "device=cpu"])
    with open_dict(cfg):
        cfg.cache_dir = str(tmp_path / "cache")
    return Job(cfg, {"generator": f"stargan(target={target})"}).run()


def test_target_all_gives_each_target_the_rows_and_cache_of_its_own_job(tmp_path, one_thread):
    both = run(tmp_path, "all")
    rows = pd.DataFrame(both.rows)
    assert sorted(rows["generator"].unique()) == sorted(f"stargan(target=[{t}])" for t in TARGETS)
    per_label = rows.groupby("generator").size()
    assert (per_label == 3 * 2 * 3).all()  # 3 images x 2 metrics x 3 pairs, for every target
    assert both.stats["stages"]["generate"]["computed"] == 3 * 2 * len(TARGETS)  # g_x, g_t

    male = run(tmp_path, "[Male]")
    assert male.stats["stages"]["generate"] == {**male.stats["stages"]["generate"],
                                                "computed": 0}  # all from the target=all job
    mine = pd.DataFrame(male.rows).drop(columns="generator")
    theirs = rows[rows["generator"] == "stargan(target=[Male])"].drop(columns="generator")
    key = ["image_id", "pair", "metric"]
    merged = mine.merge(theirs, on=key, suffixes=("", "_all"))
    assert len(merged) == len(mine) == 18
    assert (merged["value"] == merged["value_all"]).all()
    # five different edits of each image, not one edit written under five labels
    g_x = pd.DataFrame(both.images).query("image == 'g_x'")["key"].tolist()
    assert len(set(g_x)) == 3 * len(TARGETS)
