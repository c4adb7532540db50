"""No run overwrites another's results; bad input stops with one line naming what is wrong."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import bench
from PIL import Image

from benchmark.data.folder import FolderDataset
from benchmark.errors import BenchError

RUN = ["defense=none", "transform=jpeg", "metric=[psnr]", "pairs=[fidelity]",
       "dataset.limit=1", "dataset.resolution=32", "progress=false"]


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def faces(folder: Path, names: list[str], size: int = 48) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (size, size), (40 * i, 90, 160)).save(folder / name)
    return folder


# -- lost results ---------------------------------------------------------------------------------

def test_four_runs_started_together_get_four_directories(workdir):
    exe = Path(sys.executable).with_name("bench")
    procs = [subprocess.Popen([str(exe), "run", *RUN, f"transform.quality={q}"], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ.copy())
             for q in (90, 80, 70, 60)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e for _, e in outs]
    dirs = sorted(p.parent for p in (workdir / "results" / "runs").rglob("status.json"))
    assert len(dirs) == 4
    qualities = set()
    for d in dirs:
        assert json.loads((d / "status.json").read_text())["status"] == "done"
        qualities |= set(pd.read_csv(d / "samples.csv")["transform"])
    assert qualities == {f"jpeg(quality={q})" for q in (90, 80, 70, 60)}


def test_a_directory_holding_another_configs_results_is_not_overwritten(workdir):
    bench("run", *RUN, "transform.quality=90", "hydra.run.dir=shared", cwd=workdir)
    before = (workdir / "shared" / "samples.csv").read_text()
    proc = bench("run", *RUN, "transform.quality=10", "hydra.run.dir=shared", cwd=workdir,
                 check=False)
    one_line_error(proc, str(workdir / "shared"), "another config", "hydra.run.dir")
    assert (workdir / "shared" / "samples.csv").read_text() == before
    assert json.loads((workdir / "shared" / "status.json").read_text())["status"] == "done"
    bench("run", *RUN, "transform.quality=90", "hydra.run.dir=shared", cwd=workdir)  # same: fine


def test_two_files_with_one_image_id_are_refused_naming_both(tmp_path):
    root = faces(tmp_path / "faces", ["a.png", "a.jpg", "b.png"])
    with pytest.raises(BenchError) as e:
        FolderDataset(str(root), resolution=32)
    assert str(root / "a.png") in str(e.value) and str(root / "a.jpg") in str(e.value)
    faces(tmp_path / "faces" / "sub", ["a.png"])  # another folder: another id
    (root / "a.jpg").unlink()
    ids = [FolderDataset(str(root), resolution=32).image_id(p)
           for p in FolderDataset(str(root), resolution=32).paths]
    assert ids == ["a", "b", "sub/a"]


def test_empty_cache_dir_is_refused(workdir):
    proc = bench("run", *RUN, "cache_dir=", "hydra.run.dir=out", cwd=workdir, check=False)
    one_line_error(proc, "cache_dir=''")
    assert not list(workdir.glob("*/*.png"))  # nothing written into the working directory


# -- one-line errors -------------------------------------------------------------------------------

def test_cache_that_is_a_file_or_cannot_be_created(workdir, monkeypatch):
    a_file = workdir / "a_file"
    a_file.write_text("")
    monkeypatch.setenv("BENCH_CACHE", str(a_file))
    one_line_error(bench("run", *RUN, "hydra.run.dir=out", cwd=workdir, check=False),
                   str(a_file), "not a directory")
    one_line_error(bench("cache", "info", "--cache-dir", str(a_file), cwd=workdir, check=False),
                   str(a_file), "not a directory")
    below_a_file = a_file / "cache"  # cannot be created, whoever runs the test (root too)
    one_line_error(bench("run", *RUN, f"cache_dir={below_a_file}", "hydra.run.dir=out2",
                         cwd=workdir, check=False), str(below_a_file), "not writable")


def test_unwritable_run_directory_is_one_line(workdir):
    (workdir / "a_file").write_text("")
    proc = bench("run", *RUN, "hydra.run.dir=a_file/out", cwd=workdir, check=False)
    one_line_error(proc, "hydra.run.dir", str(workdir / "a_file" / "out"))


@pytest.mark.parametrize("override, needles", [
    ("seed=abc", ["seed='abc'", "integer"]),
    ("batch_size=0", ["batch_size=0", ">= 1"]),
    ("metric=[nope]", ["metric: no config 'nope'", "psnr", "ssim"]),
    ("device=cuda", ["device='cuda'", "device=cpu"]),
])
def test_bad_top_level_values(override, needles, workdir):
    if override.startswith("device") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = bench("run", *RUN, override, "hydra.run.dir=out", cwd=workdir, check=False)
    one_line_error(proc, *needles)
    assert not (workdir / "cache").exists()  # stopped before any work


def test_folder_dataset_without_root(workdir, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    proc = bench("run", *RUN, "dataset=folder", "hydra.run.dir=out", cwd=workdir, check=False)
    one_line_error(proc, "dataset=folder", "dataset.root=")


def test_a_requested_metric_without_weights_stops_unless_skipping_is_asked_for(workdir,
                                                                               monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))  # no LPIPS backbone there
    proc = bench("run", *RUN, "metric=[psnr,lpips]", "hydra.run.dir=out", cwd=workdir,
                 check=False)
    one_line_error(proc, "metric.lpips is unavailable", "skip_unavailable_metrics=true",
                   str(workdir / "torch"))
    assert not (workdir / "out" / "samples.csv").exists()
    bench("run", *RUN, "metric=[psnr,lpips]", "skip_unavailable_metrics=true",
          "hydra.run.dir=out", cwd=workdir)
    assert set(pd.read_csv(workdir / "out" / "samples.csv")["metric"]) == {"psnr"}


def test_dangling_link_counts_as_unreadable_and_small_images_warn_once(workdir):
    root = faces(workdir / "faces", ["a.png", "b.png"], size=20)
    (root / "c.png").symlink_to(root / "gone.png")
    proc = bench("run", *RUN, "dataset=folder", f"dataset.root={root}", "dataset.limit=null",
                 "hydra.run.dir=out", cwd=workdir)
    stats = json.loads((workdir / "out" / "stats.json").read_text())
    assert stats["unreadable"] == [str(root / "c.png")] and stats["images"] == 2
    warnings = [line for line in proc.stderr.splitlines() if "smaller than dataset.min_size" in line]
    assert len(warnings) == 1 and "2 image(s)" in warnings[0] and "20 px" in warnings[0]
    images = pd.read_csv(workdir / "out" / "images.csv")
    assert set(images["path"]) == {str(root / "a.png"), str(root / "b.png")}


def test_surrogate_notice_is_printed_once_and_only_for_the_job_it_describes(workdir):
    tiny = ["dataset.limit=1", "dataset.resolution=32", "progress=false", "metric=[psnr]"]
    proc = bench("run", *tiny, "defense.iterations=1", "hydra.run.dir=default", cwd=workdir)
    assert (proc.stdout + proc.stderr).count("SURROGATE experiment") == 1
    assert "SURROGATE" in json.loads((workdir / "default" / "stats.json").read_text())["notice"]
    proc = bench("run", *tiny, "defense=noise", "hydra.run.dir=noise", cwd=workdir)
    assert "SURROGATE" not in proc.stdout + proc.stderr


def test_a_sweep_over_a_path_value_makes_one_folder_per_job(workdir):
    root = faces(workdir / "data" / "faces", ["a.png"], size=40)
    bench("run", "-m", *RUN, "dataset=folder", f"dataset.root={root}", "transform.quality=90,50",
          "hydra.sweep.dir=sweep", cwd=workdir)
    jobs = sorted(p.parent for p in (workdir / "sweep").rglob("status.json"))
    assert len(jobs) == 2 and all(job.parent == workdir / "sweep" for job in jobs), jobs
    assert "dataset.root=_" in jobs[0].name


def test_an_attack_reports_each_iteration_to_the_progress_bar():
    from benchmark.defenses.pgd import PGD, iteration_progress
    from benchmark.progress import iteration_reporter

    class Bar:  # what the runner's reporter touches of a tqdm bar
        def __init__(self):
            self.postfixes = []

        def set_postfix_str(self, text, refresh=True):
            self.postfixes.append(text)

        def refresh(self):
            pass

    bar = Bar()
    token = iteration_progress.set(iteration_reporter(bar, 2))
    try:
        PGD(8, 1, 3).maximize(torch.rand(2, 3, 8, 8), lambda x: x.mean((1, 2, 3)), [0, 1])
    finally:
        iteration_progress.reset(token)
    assert bar.postfixes == [f"2 image(s) at iteration {i}/3" for i in (1, 2, 3)]


def test_a_component_deviation_is_printed_with_the_results_and_kept(workdir):
    proc = bench("run", "experiment=tiny", "generator=stargan", "defense=df_rap", "metric=[psnr]",
                 "pairs=[protection]", "dataset.limit=1", "progress=false", "hydra.run.dir=out",
                 cwd=workdir)
    assert "NOTE: df_rap: no ComGAN weights" in proc.stdout
    notices = json.loads((workdir / "out" / "stats.json").read_text())["notices"]
    assert len(notices) == 1 and "ComGAN" in notices[0]
