"""Work not repeated across the jobs of a sweep: bench's sweeper composes each job once and skips
a finished job without composing it (benchmark.launch_keys); a process keeps the images it
decoded (benchmark.data.base.DecodedImages)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image

from benchmark import launch_keys
from benchmark.data import base
from benchmark.data.folder import FolderDataset

SWEEP = ["defense=none", "transform=jpeg", "transform.quality=50,70", "metric=[psnr]",
         "pairs=[fidelity]", *TINY]

# `bench run -m` in a process that counts Hydra's compositions of a job's config
COUNTING = """
import sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
load, calls = ConfigLoaderImpl.load_sweep_config, []
def counted(self, master, overrides):
    calls.append(list(overrides))
    return load(self, master, overrides)
ConfigLoaderImpl.load_sweep_config = counted
from benchmark.cli import main
try:
    main(["run", "-m", *sys.argv[1:]])
finally:
    print("COMPOSED", len(calls))
"""


def _sweep(workdir: Path, *extra: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", COUNTING, *SWEEP, "hydra.sweep.dir=sweep",
                           *extra], cwd=workdir, capture_output=True, text=True, timeout=300,
                          env=os.environ.copy(), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    composed = [line for line in proc.stdout.splitlines() if line.startswith("COMPOSED")]
    return int(composed[-1].split()[1]), proc.stdout


def _job_files(sweep: Path) -> dict[str, int]:
    return {str(p.relative_to(sweep)): p.stat().st_mtime_ns for p in sweep.glob("*/.hydra/*")}


def test_each_job_is_composed_once_a_finished_one_not_at_all_an_unfinished_one_again(workdir):
    composed, out = _sweep(workdir)
    assert composed == 2, out  # Hydra's basic sweeper composes 4: to validate, then to run
    assert out.count("skipped") == 0
    sweep = workdir / "sweep"
    before = _job_files(sweep)
    assert len(before) >= 6  # config.yaml, hydra.yaml, overrides.yaml of each job

    composed, out = _sweep(workdir)
    assert composed == 0, out
    assert out.count("skipped (finished, same config)") == 2
    assert _job_files(sweep) == before  # Hydra did not run the jobs again

    second = next(sweep.glob("1_*"))
    (second / "summary.csv").unlink()
    composed, out = _sweep(workdir)
    assert composed == 1 and out.count("skipped") == 1
    assert (second / "summary.csv").is_file()
    assert sorted(p.name[:2] for p in sweep.iterdir() if p.is_dir()) == ["0_", "1_"]


def test_what_composition_reads_changing_makes_the_sweeper_compose_again(workdir):
    extra = workdir / "extra"
    (extra / "metric").mkdir(parents=True)
    (extra / "metric" / "mine.yaml").write_text("_target_: benchmark.metrics.pixel.PSNR\n")
    searchpath = f"hydra.searchpath=[file://{extra}]"
    assert _sweep(workdir, searchpath)[0] == 2
    # a config file of the search path edited: the jobs are composed, and skipped by their
    # composed config (the edit is to a config they do not use)
    (extra / "metric" / "mine.yaml").write_text("_target_: benchmark.metrics.pixel.SSIM\n")
    composed, out = _sweep(workdir, searchpath)
    assert composed == 2 and out.count("skipped (finished, same config)") == 2


def test_the_launch_key_follows_overrides_files_and_the_variables_they_read(tmp_path,
                                                                           monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "config.yaml").write_text("root: ${oc.env:BENCH_TEST_ROOT,none}\n")
    sources = (f"file://{configs}",)
    launch_keys.sources_digest.cache_clear()
    key = launch_keys.launch_key(["a=1"], "config", sources)
    assert launch_keys.launch_key(["a=1"], "config", sources) == key
    assert launch_keys.launch_key(["a=2"], "config", sources) != key
    assert launch_keys.launch_key(["a=1"], "other", sources) != key
    monkeypatch.setenv("BENCH_TEST_ROOT", "/data")
    launch_keys.sources_digest.cache_clear()
    assert launch_keys.launch_key(["a=1"], "config", sources) != key
    monkeypatch.delenv("BENCH_TEST_ROOT")
    (configs / "more.yaml").write_text("x: 1\n")
    launch_keys.sources_digest.cache_clear()
    assert launch_keys.launch_key(["a=1"], "config", sources) != key
    launch_keys.sources_digest.cache_clear()


def _folder(tmp_path: Path, colour: tuple) -> Path:
    root = tmp_path / "faces"
    root.mkdir(exist_ok=True)
    Image.fromarray(np.full((40, 50, 3), colour, np.uint8)).save(root / "a.png")
    return root


@pytest.fixture
def decoded(monkeypatch):
    memo = base.DecodedImages()
    monkeypatch.setattr(base, "DECODED", memo)
    return memo


def test_a_decoded_image_is_kept_per_file_identity_and_is_the_same_image(tmp_path, decoded,
                                                                         monkeypatch):
    root = _folder(tmp_path, (10, 20, 30))
    first = FolderDataset(root=str(root), resolution=32).load(0)
    assert len(decoded.entries) == 1
    reads, read = [], base.read_image
    monkeypatch.setattr(base, "read_image", lambda p: reads.append(p) or read(p))
    again = FolderDataset(root=str(root), resolution=32).load(0)
    assert not reads  # from memory
    assert torch.equal(again.x, first.x) and again.key == first.key

    # the file rewritten: its identity changes, the new pixels are read
    stat = (root / "a.png").stat()
    _folder(tmp_path, (200, 20, 30))
    os.utime(root / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = FolderDataset(root=str(root), resolution=32).load(0)
    assert len(reads) == 1 and changed.key != first.key and changed.x[0, 0, 0] > 0.5
    # another resolution is another image
    assert FolderDataset(root=str(root), resolution=16).load(0).x.shape[-1] == 16
    assert len(reads) == 2


def test_memory_beyond_the_budget_drops_the_oldest(decoded):
    decoded.budget = 3 * 100
    for i in range(5):
        decoded.put(("id", i), np.zeros(100, np.uint8), None, f"k{i}", None)
    assert [k[1] for k in decoded.entries] == [2, 3, 4] and decoded.used == 300
    assert decoded.get(("id", 2)) is not None  # used: now the newest
    decoded.put(("id", 5), np.zeros(100, np.uint8), None, "k5", None)
    assert [k[1] for k in decoded.entries] == [4, 2, 5]


def test_a_dataset_with_its_own_crop_and_no_crop_identity_is_read_each_time(tmp_path, decoded):
    class Custom(FolderDataset):
        def crop_box(self, path, img):
            return (0, 0, 20, 20)

    root = _folder(tmp_path, (1, 2, 3))
    Custom(root=str(root), resolution=16).load(0)
    assert not decoded.entries


GROUPED = ["defense=none,noise", "transform=identity,jpeg", "metric=[psnr]", "pairs=[fidelity]",
           *TINY]


def test_jobs_grouped_by_defense_run_in_one_process_per_defense(workdir):
    from conftest import bench

    bench("run", "-m", *GROUPED, "hydra/launcher=bench_local", "hydra.launcher.group_by=[defense]",
          "hydra.sweep.dir=sweep", cwd=workdir)
    status = {p.parent.name: json.loads(p.read_text())
              for p in (workdir / "sweep").glob("*/status.json")}
    assert len(status) == 4 and {s["status"] for s in status.values()} == {"done"}
    pids = {}
    for name, s in status.items():
        pids.setdefault("defense=noise" in name, set()).add(s["pid"])
    assert all(len(p) == 1 for p in pids.values()) and pids[True] != pids[False]
    assert len(list((workdir / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 2


def test_a_grouped_slurm_array_has_one_task_per_group(workdir):
    fake = workdir / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_CAPTURE"\nexit 1\n')
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
           "SBATCH_CAPTURE": str(workdir / "job.sh")}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("bench")), "run", "-m", *GROUPED,
         "hydra/launcher=slurm", "hydra.launcher.group_by=[defense]", "hydra.sweep.dir=sweep"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "#SBATCH --array=0-1%" in (workdir / "job.sh").read_text()
