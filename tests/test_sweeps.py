"""Sweeps at scale: one cache shared by concurrent processes, failed jobs, SIGKILL and resume,
the sweep summary, the SLURM and submitit_local launchers, the paper presets."""

import contextlib
import json
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, bench
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from PIL import Image

from benchmark.cache import ArtifactCache
from benchmark.paths import config_dir, portraits_dir

# Spawned, not forked: a fork of pytest's process, with the threads earlier tests left running
# (heartbeats, torch's pool), can deadlock in the child; daemonic, so no hung child outlives pytest.
SPAWN = multiprocessing.get_context("spawn")
KEYS = [f"{i:02x}" * 32 for i in range(4)]


def _image(i: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(i)
    return torch.round(torch.rand(3, 24, 24, generator=g) * 255) / 255


def _checksum(x: torch.Tensor) -> int:
    return int((x * 255).round().to(torch.int64).sum())


def _fill_from_one_process(root, lock, barrier, calls, results, worker, behind=False):
    """One job: needs every KEYS entry, computes (slowly) those nobody else has; `behind`: its
    images stored by the background writer, as a job's are."""
    torch.set_num_threads(1)
    cache = ArtifactCache(root, lock=lock)

    def compute(indices):
        with open(calls, "a") as f:
            f.write("".join(f"{KEYS[i]} {worker}\n" for i in indices))
        time.sleep(0.4)  # a protected image takes a while: the others must not start it too
        out = []
        for i in indices:
            cache.save_image("protect", KEYS[i], _image(i), {"worker": worker})
            out.append(_image(i))
        return out

    barrier.wait()
    with cache.write_behind() if behind else contextlib.nullcontext():
        values, computed, waited = cache.load_or_compute(
            "protect", KEYS, lambda k: cache.load_image("protect", k), compute)
    results.put((worker, computed, waited, [_checksum(v) for v in values]))


def _results_of(procs, results, timeout: float = 300) -> list:
    """Starts the processes and takes one result from each; a child that died says so."""
    for p in procs:
        p.start()
    out, deadline = [], time.monotonic() + timeout
    try:
        while len(out) < len(procs):
            try:
                out.append(results.get(timeout=1))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a worker exited {dead}"
                assert time.monotonic() < deadline, f"{len(out)} of {len(procs)} answered"
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    return out


def _run_concurrently(root: Path, lock: bool, workers: int = 3, behind: bool = False):
    calls = root / "calls.txt"
    calls.parent.mkdir(parents=True, exist_ok=True)
    calls.write_text("")
    barrier, results = SPAWN.Barrier(workers), SPAWN.Queue()
    procs = [SPAWN.Process(target=_fill_from_one_process, daemon=True,
                           args=(root, lock, barrier, calls, results, w, behind))
             for w in range(workers)]
    out = _results_of(procs, results)
    lines = [line.split() for line in calls.read_text().splitlines()]
    return out, lines


@pytest.mark.parametrize("behind", [False, True], ids=["synchronous", "write-behind"])
def test_concurrent_processes_compute_each_entry_once_with_locks(tmp_path, behind):
    out, calls = _run_concurrently(tmp_path / "cache", lock=True, behind=behind)
    expected = [_checksum(_image(i)) for i in range(len(KEYS))]
    assert sorted(k for k, _ in calls) == sorted(KEYS)  # every entry computed exactly once
    assert sum(computed for _, computed, _, _ in out) == len(KEYS)
    # the other processes waited for the entries instead of computing them
    assert sum(waited for _, _, waited, _ in out) == len(KEYS) * (len(out) - 1)
    for _, _, _, values in out:
        assert values == expected
    cache = ArtifactCache(tmp_path / "cache")
    for i, key in enumerate(KEYS):
        assert torch.equal(cache.load_image("protect", key), _image(i))
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*")
                 if p.suffix in (".lock", ".tmp") or ".stale." in p.name]
    assert leftovers == []


@pytest.mark.parametrize("behind", [False, True], ids=["synchronous", "write-behind"])
def test_without_locks_writers_race_but_entries_stay_whole(tmp_path, behind):
    out, calls = _run_concurrently(tmp_path / "cache", lock=False, behind=behind)
    per_key = pd.Series([k for k, _ in calls]).value_counts()
    # every process computed everything (the race the lock avoids), and no entry is corrupt
    assert set(per_key.index) == set(KEYS) and per_key.max() <= len(out)
    assert per_key.sum() > len(KEYS)
    cache = ArtifactCache(tmp_path / "cache")
    for i, key in enumerate(KEYS):
        assert torch.equal(cache.load_image("protect", key), _image(i))


def test_stale_locks_are_broken_live_ones_are_not(tmp_path):
    cache = ArtifactCache(tmp_path, stale_after=1.0)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = cache.path("protect", KEYS[0], cache.LOCK)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    assert cache.try_lock("protect", KEYS[0])  # its owner is gone: broken at once
    cache.unlock("protect", KEYS[0])

    other = cache.path("protect", KEYS[1], cache.LOCK)
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"host": "another-node", "pid": 1}))
    assert not cache.try_lock("protect", KEYS[1])  # another host, refreshed recently
    old = time.time() - 5
    os.utime(other, (old, old))
    assert cache.try_lock("protect", KEYS[1])  # no heartbeat for longer than stale_after
    cache.unlock("protect", KEYS[1])

    # a lock this process holds is kept fresh by the heartbeat
    assert cache.try_lock("protect", KEYS[2])
    held = cache.path("protect", KEYS[2], cache.LOCK)
    os.utime(held, (old, old))
    time.sleep(0.4)
    assert time.time() - held.stat().st_mtime < 1.0
    cache.unlock("protect", KEYS[2])


def _compose(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def _job_in_a_process(cfg, barrier, results, transform):
    from benchmark.defenses.noise import UniformNoise
    from benchmark.runner import Job

    torch.set_num_threads(1)
    plain = UniformNoise.protect

    def slow(self, x, seeds):  # a defense that takes a while, so the jobs overlap
        time.sleep(0.5)
        return plain(self, x, seeds)

    UniformNoise.protect = slow
    barrier.wait()
    result = Job(cfg, {"transform": transform}).run()
    results.put((transform, result.stats["stages"]["protect"]))


def test_concurrent_jobs_of_a_sweep_share_the_protected_images(tmp_path):
    """Three jobs (one per transform) start together and need the same protected images."""
    transforms = ["identity", "jpeg", "resize"]
    cfgs = []
    for t in transforms:
        cfg = _compose([*TINY, "defense=noise", f"transform={t}", "metric=[psnr]",
                        "pairs=[fidelity]", "device=cpu"])
        with open_dict(cfg):
            cfg.cache_dir = str(tmp_path / "cache")
        cfgs.append(cfg)
    barrier, results = SPAWN.Barrier(len(cfgs)), SPAWN.Queue()
    procs = [SPAWN.Process(target=_job_in_a_process, args=(c, barrier, results, t), daemon=True)
             for c, t in zip(cfgs, transforms)]
    stats = dict(_results_of(procs, results))
    assert sum(s["computed"] for s in stats.values()) == 3  # 3 images, each protected once
    assert sum(s["waited"] for s in stats.values()) == 3 * (len(procs) - 1)


def _statuses(sweep: Path) -> dict[str, str]:
    out = {}
    for f in sweep.glob("*/status.json"):
        try:
            out[f.parent.name] = json.loads(f.read_text())["status"]
        except (OSError, ValueError):
            pass
    return out


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and p.suffix in (".png", ".npy", ".json", ".csv")}


SWEEP = ["defense=none,noise", "transform=identity,jpeg,resize", *TINY, "metric=[psnr,ssim]",
         "pairs=[fidelity,invisibility]"]


def test_sigkill_midway_then_rerun_finishes_without_recomputing(workdir):
    exe = Path(sys.executable).with_name("bench")
    cmd = [str(exe), "run", "-m", *SWEEP, "hydra.sweep.dir=sweep"]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    sweep = workdir / "sweep"
    deadline = time.time() + 300
    while list(_statuses(sweep).values()).count("done") < 2:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    before = _statuses(sweep)
    done = sorted(name for name, s in before.items() if s == "done")
    assert 2 <= len(done) < 6
    jobs_before = {name: _snapshot(sweep / name) for name in done}
    cache_before = _snapshot(workdir / "cache")

    rerun = bench("run", "-m", *SWEEP, "hydra.sweep.dir=sweep", cwd=workdir)
    assert rerun.stdout.count("skipped (finished, same config)") == len(done)
    after = _statuses(sweep)
    assert len(after) == 6 and set(after.values()) == {"done"}
    for name in done:  # finished jobs were left exactly as they were
        assert _snapshot(sweep / name) == jobs_before[name]
    cache_after = _snapshot(workdir / "cache")
    # nothing that existed was written again (atomic writes would change the mtime)
    assert {k: cache_after.get(k) for k in cache_before} == cache_before
    protect = [json.loads((sweep / n / "stats.json").read_text())["stages"].get("protect", {})
               for n in after if n not in done]
    # the noise images made before the kill were read, not recomputed
    assert all(s.get("computed", 0) + s.get("cached", 0) in (0, 3) for s in protect)

    # nothing lost: every job equals the same sweep run without interruption in a fresh cache
    fresh = workdir / "fresh-cache"
    env_cache = os.environ["BENCH_CACHE"]
    os.environ["BENCH_CACHE"] = str(fresh)
    try:
        bench("run", "-m", *SWEEP, "hydra.sweep.dir=reference", cwd=workdir)
    finally:
        os.environ["BENCH_CACHE"] = env_cache
    for name in after:
        ours = pd.read_csv(sweep / name / "samples.csv", dtype={"image_id": str})
        ref = pd.read_csv(workdir / "reference" / name / "samples.csv", dtype={"image_id": str})
        pd.testing.assert_frame_equal(ours, ref)
    summary = pd.read_csv(sweep / "sweep_summary.csv")
    assert summary["job"].nunique() == 6 and set(summary["status"]) == {"done"}


def _folder(root: Path, n: int = 2) -> Path:
    root.mkdir()
    for i in range(n):
        Image.new("RGB", (40, 40), (60 * i + 40, 90, 160)).save(root / f"img{i}.png")
    return root


def test_failed_job_is_recorded_sweep_goes_on_and_rerun_retries_it(workdir):
    _folder(workdir / "good")
    args = ["-m", "dataset=folder", "dataset.root=good,later", "dataset.resolution=32",
            "defense=none,noise", "transform=jpeg", "metric=[psnr]", "pairs=[fidelity]",
            "progress=false", "hydra.sweep.dir=sweep"]
    first = bench("run", *args, cwd=workdir)  # the sweep itself succeeds
    statuses = _statuses(workdir / "sweep")
    failed = sorted(n for n, s in statuses.items() if s == "failed")
    assert len(statuses) == 4 and len(failed) == 2 and all("later" in n for n in failed)
    error = json.loads((workdir / "sweep" / failed[0] / "status.json").read_text())["error"]
    assert "later" in error and "not a directory" in error
    summary = pd.read_csv(workdir / "sweep" / "sweep_summary.csv")
    jobs = summary.drop_duplicates("job").set_index("job")
    assert (jobs.loc[failed, "status"] == "failed").all()
    assert jobs.loc[failed, "error"].str.contains("not a directory").all()
    assert "not done" in first.stderr

    _folder(workdir / "later")  # the cause is fixed: the same sweep again
    second = bench("run", *args, cwd=workdir)
    assert second.stdout.count("skipped (finished, same config)") == 2
    assert set(_statuses(workdir / "sweep").values()) == {"done"}
    summary = pd.read_csv(workdir / "sweep" / "sweep_summary.csv")
    assert set(summary["status"]) == {"done"} and summary["job"].nunique() == 4


def test_a_job_counts_as_finished_only_with_the_same_config_and_all_its_files(tmp_path):
    from benchmark.results.job_files import config_fingerprint, is_finished

    cfg = _compose([*TINY, "defense=noise", "transform=jpeg"])
    moved = OmegaConf.merge(cfg, {"device": "cpu", "progress": True, "cache_dir": "/elsewhere"})
    other = OmegaConf.merge(cfg, {"transform": {"quality": 10}})
    fp = config_fingerprint(cfg)
    assert config_fingerprint(moved) == fp  # where and how fast it runs: the same job
    assert config_fingerprint(other) != fp
    job = tmp_path / "job"
    job.mkdir()
    (job / "status.json").write_text(json.dumps({"status": "done", "fingerprint": fp}))
    for name in ("samples.csv", "summary.csv", "stats.json"):
        (job / name).write_text("x")
    assert is_finished(job, fp) and not is_finished(job, config_fingerprint(other))
    (job / "samples.csv").unlink()
    assert not is_finished(job, fp)  # results missing: run it again


def test_slurm_launcher_writes_the_array_script_from_config(workdir):
    """A stand-in `sbatch` captures the script submitit generates for hydra/launcher=slurm."""
    fake = workdir / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_CAPTURE"\n'
                                 'echo "sbatch: test double, nothing submitted" >&2\nexit 1\n')
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
           "SBATCH_CAPTURE": str(workdir / "job.sh")}
    exe = Path(sys.executable).with_name("bench")
    proc = subprocess.run(
        [str(exe), "run", "-m", "defense=none,noise", "transform=identity,jpeg",
         "hydra/launcher=slurm", "hydra.launcher.partition=debug",
         "hydra.launcher.array_parallelism=2", "hydra.launcher.timeout_min=30",
         "+hydra.launcher.setup=[module load cuda]", "hydra.sweep.dir=sweep"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0 and "test double" in proc.stderr
    script = (workdir / "job.sh").read_text()
    for line in ("#SBATCH --partition=debug", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --array=0-3%2", "#SBATCH --time=30", "#SBATCH --job-name=bench",
                 "module load cuda"):
        assert line in script, line
    assert f"{workdir}/sweep/.submitit" in script


def test_slurm_defaults_set_the_environment_lines():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.array_parallelism == 32
    assert OmegaConf.to_container(launcher, resolve=True)["setup"] == \
        ["export OMP_NUM_THREADS=8"]


def test_submitit_local_sweep_runs_the_jobs_and_summarises(workdir):
    bench("run", "-m", "defense=none,noise", "transform=jpeg", *TINY, "metric=[psnr]",
          "pairs=[fidelity]", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
          "hydra.sweep.dir=sweep", cwd=workdir)
    assert set(_statuses(workdir / "sweep").values()) == {"done"}
    summary = pd.read_csv(workdir / "sweep" / "sweep_summary.csv")
    assert summary["job"].nunique() == 2 and set(summary["defense"]) == {"none", "noise"}
    assert (workdir / "sweep" / ".submitit").is_dir()  # the jobs ran through submitit


PRESETS = sorted(p.stem for p in (config_dir() / "experiment").glob("paper_*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_paper_presets_sweep_components_that_exist(preset):
    """Each option a preset sweeps composes where its config exists (others land later)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        base = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        params = base.hydra.sweeper.params
        assert {"defense", "transform", "generator", "metric"} <= set(params)
        assert "BENCH_DATA" in OmegaConf.to_yaml(base.dataset) or base.dataset.root
        for group in ("defense", "transform", "generator"):
            for option in str(params[group]).split(","):
                if not (config_dir() / group / f"{option}.yaml").is_file():
                    continue
                cfg = compose("config", overrides=[f"experiment={preset}", f"{group}={option}",
                                                   f"dataset.root={portraits_dir()}"])
                OmegaConf.to_container(cfg, resolve=True)
        metrics = str(params["metric"]).strip("[]").split(",")
        known = [m for m in metrics if (config_dir() / "metric" / f"{m}.yaml").is_file()]
        assert known, metrics
        compose("config", overrides=[f"experiment={preset}", f"metric=[{','.join(known)}]"])


def test_rerun_waits_for_a_job_still_running_on_this_host(tmp_path):
    """A killed submitit_local launcher leaves its job processes running: wait for them."""
    from benchmark.results.job_files import wait_for_live_run

    job = tmp_path / "job"
    job.mkdir()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    (job / "status.json").write_text(json.dumps(
        {"status": "running", "host": socket.gethostname(), "pid": worker.pid}))
    start = time.monotonic()
    wait_for_live_run(job, poll=0.1)
    assert time.monotonic() - start > 1.0 and worker.poll() is not None
    (job / "status.json").write_text(json.dumps(
        {"status": "running", "host": "another-node", "pid": os.getpid()}))
    start = time.monotonic()
    wait_for_live_run(job, poll=0.1)  # other hosts cannot be checked: no wait
    assert time.monotonic() - start < 0.5
