"""`bench plan`: a sweep's counts before it runs equal what the run computes, and a re-plan says 0."""

import json
from collections import Counter

import pytest
from conftest import TINY, bench

from benchmark import models
from benchmark.cache import ArtifactCache
from benchmark.plan import Need, _from_table, _measured_rows, format_plan, main, plan

SWEEP = ["defense=none,noise", "transform=identity,jpeg", *TINY, "metric=[psnr]",
         "pairs=[fidelity,invisibility,control]"]


def _computed(sweep) -> Counter:
    """Per stage, the items the sweep's jobs computed (stats.json)."""
    total = Counter()
    for stats in sweep.glob("*/stats.json"):
        for stage, s in json.loads(stats.read_text())["stages"].items():
            total[stage] += s["computed"]
    return total


def _entries(cache, stage: str) -> int:
    return len(list((cache / stage).rglob(f"*{ArtifactCache.IMAGE}")))


def test_plan_counts_what_the_sweep_then_computes_and_a_replan_says_zero(workdir):
    models.forget()  # what tests before this one in the process loaded
    before = plan([*SWEEP, "hydra.sweep.dir=sweep"])
    assert not models._LOADED  # planned without loading a model
    assert len(before.jobs) == 4 and not any(j.error or j.skipped for j in before.jobs)
    # 3 images: noise protects each once for both transforms; jpeg makes T(x) once for both
    # defenses (T(none(x)) is T(x)) and T(noise(x))
    assert {s: p.to_compute for s, p in before.stages.items()} == {
        "protect": 3, "transform": 6, "fit": 0, "generate": 0, "embed": 0}
    assert before.job_records.to_compute == 4

    bench("run", "-m", *SWEEP, "hydra.sweep.dir=sweep", cwd=workdir)
    computed = _computed(workdir / "sweep")
    for stage, planned in before.stages.items():
        assert computed[stage] == planned.to_compute, stage
        if planned.needed:
            assert _entries(workdir / "cache", stage) == planned.needed, stage
    assert computed["job"] == before.job_records.to_compute

    after = plan([*SWEEP, "hydra.sweep.dir=sweep"])
    assert all(p.to_compute == 0 for p in after.stages.values())
    assert after.job_records.to_compute == 0
    assert {j.skipped for j in after.jobs} == {"finished in its folder"}

    grown = plan([*SWEEP[:1], "transform=identity,jpeg,resize", *SWEEP[2:],
                  "hydra.sweep.dir=elsewhere"])
    assert {j.skipped for j in grown.jobs} == {"served whole from the job cache", ""}
    assert grown.stages["protect"].to_compute == 0  # the resize jobs read noise's images
    assert grown.stages["transform"].to_compute == 6
    text = format_plan(grown)
    assert "resize: unknown" in text and "total:" in text


def test_an_estimate_comes_from_the_shipped_table_scaled_by_iterations_and_pixels():
    config = {"encoder": {"model": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
              "iterations": 100, "precision": "fp32"}
    need = Need("protect", "k", "photoguard_encoder", json.dumps(config), 256, 8)
    estimate = _from_table(need, "cuda", _measured_rows())
    assert estimate.seconds == pytest.approx(34.72 * 100 / 1000 * (256 / 512) ** 2)
    assert "2026-11-26" in estimate.source and "NVIDIA H200" in estimate.source
    assert _from_table(need, "cpu", _measured_rows()) is None  # no CPU figure: unknown
    tiny = json.dumps({**config, "encoder": {"model": "tiny/sd"}})
    assert _from_table(Need("protect", "k", "photoguard_encoder", tiny, 256, 8), "cuda",
                       _measured_rows()) is None  # another model's cost is not this one's


def test_a_generator_that_fits_on_the_set_is_planned_fit_by_fit(workdir):
    sweep = ["experiment=tiny", "defense=noise", "generator=dreambooth", "transform=jpeg",
             "dataset.limit=2", "pairs=[protection,edit]", "metric=[psnr]",
             "hydra.sweep.dir=sweep"]
    before = plan(sweep)
    # pairs protection and edit: G(x), G(noise(x)), G(T(noise(x))) of 2 photos, 2 slots each
    assert before.stages["fit"].to_compute == 3 and before.stages["generate"].to_compute == 6
    bench("run", "-m", *sweep, cwd=workdir)
    computed = _computed(workdir / "sweep")
    for stage, planned in before.stages.items():
        assert computed[stage] == planned.to_compute, stage
    assert all(p.to_compute == 0 for p in plan(sweep).stages.values())


def test_slurm_plan_names_the_array_and_its_resources(workdir):
    p = plan(["defense=none,noise", *TINY, "metric=[psnr]", "hydra/launcher=slurm",
              "hydra.launcher.array_parallelism=2", "hydra.launcher.partition=gpu"])
    line = format_plan(p).splitlines()[-1]
    assert line.startswith("SLURM array: 2 task(s) (--array=0-1%2)")
    assert "partition=gpu" in line and "gpus=1" in line and "timeout=240 min" in line
    assert {j.device for j in p.jobs} == {"cuda"}  # estimated for the GPU nodes
    grouped = plan(["defense=none,noise", "transform=identity,jpeg,resize", *TINY,
                    "metric=[psnr]", "hydra/launcher=slurm", "hydra.launcher.group_by=[defense]"])
    assert "SLURM array: 2 task(s), one per defense (--array=0-1%2)" in format_plan(grouped)


def test_bad_input_is_one_line(workdir, capsys):
    assert main(["--cfg", "job"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench plan: --cfg: not an override") and "\n" not in err
    assert main(["defense=no_such_defense"]) == 2
    err = capsys.readouterr().err.strip()
    assert "defense/no_such_defense" in err and "\n" not in err
