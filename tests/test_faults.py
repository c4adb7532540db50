"""Faults a job must survive: signals, dead runs on other hosts, full disks, foreign folders,
a closed pipe, sweeps that cannot succeed, and bad top-level values (issue 20)."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import bench

from benchmark.errors import BenchError
from benchmark.results import job_files

RUN = ["defense=none", "transform=jpeg", "metric=[psnr]", "pairs=[fidelity]",
       "dataset.limit=1", "dataset.resolution=32", "progress=false"]
# the offline default's attack, made to run until it is stopped
ENDLESS = ["dataset.limit=1", "dataset.resolution=64", "defense.iterations=100000",
           "metric=[psnr]", "pairs=[invisibility]", "progress=false"]


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_job_interrupted_in_one_line_and_a_rerun_resumes(sig, code, workdir):
    exe = Path(sys.executable).with_name("bench")
    proc = subprocess.Popen([str(exe), "run", *ENDLESS, "hydra.run.dir=out"], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = workdir / "out" / "status.json"
    deadline = time.time() + 120
    while time.time() < deadline and job_files.read_status(workdir / "out").get(
            "status") != "running":
        time.sleep(0.2)
    time.sleep(3)  # inside the attack
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"interrupted ({sig.name})" in err
    assert json.loads(status.read_text())["status"] == "interrupted"
    # the same run directory takes the re-run (an attack of 2 iterations finishes at once)
    finished = [*ENDLESS[:2], "defense.iterations=2", *ENDLESS[3:]]
    assert bench("run", *finished, "hydra.run.dir=out", cwd=workdir).returncode == 0
    assert json.loads(status.read_text())["status"] == "done"


def test_a_running_record_of_another_host_lapses_after_its_heartbeat(tmp_path):
    record = {"status": "running", "host": "node-that-died", "pid": 4242, "fingerprint": "f"}
    (tmp_path / "status.json").write_text(json.dumps(record))
    assert "a running job (pid 4242 on node-that-died" in job_files.other_run(record, "f",
                                                                              tmp_path)
    old = time.time() - job_files.STALE_AFTER - 10
    os.utime(tmp_path / "status.json", (old, old))
    assert job_files.other_run(record, "f", tmp_path) is None  # taken over


def test_a_dead_process_on_this_host_does_not_hold_its_job(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    record = {"status": "running", "host": socket.gethostname(), "pid": int(dead.stdout)}
    (tmp_path / "status.json").write_text(json.dumps(record))
    assert job_files.other_run(record, "f", tmp_path) is None


def test_the_heartbeat_keeps_a_running_record_fresh(tmp_path):
    job_files.write_status(tmp_path, "running")
    old = time.time() - 1000
    os.utime(tmp_path / "status.json", (old, old))
    with job_files.StatusHeartbeat(tmp_path, interval=0.05):
        time.sleep(0.3)
    assert job_files.status_age(tmp_path) < 5


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "samples.csv"
    target.write_text("the finished results\n")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(BenchError, match=r"cannot write .*samples.csv: no space left on device"):
        job_files.write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "the finished results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.csv"]  # no temporary file left


def test_results_are_never_half_written(tmp_path, monkeypatch):
    """A job killed while writing leaves the old file or the new one: the rename is last."""
    target = tmp_path / "samples.csv"
    target.write_text("old\n")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        job_files.write_atomic(target, "new, and much longer than the old text\n" * 100)
    monkeypatch.undo()
    assert target.read_text() == "old\n"


@pytest.mark.parametrize("setup, needle", [
    (lambda d: (d / "thesis.tex").write_text("my own file"), "holds files that are not"),
    (lambda d: (d / "status.json").write_text("{not json"), "status.json that cannot be read"),
])
def test_a_folder_that_is_not_a_bench_run_is_refused_and_left_as_it_is(setup, needle, workdir):
    folder = workdir / "mine"
    folder.mkdir()
    setup(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = bench("run", *RUN, "hydra.run.dir=mine", cwd=workdir, check=False)
    assert proc.returncode == 1 and needle in last_line(proc), proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # not even .hydra/


def test_results_inside_the_cache_are_refused(workdir):
    proc = bench("run", *RUN, f"hydra.run.dir={workdir / 'cache' / 'results'}", cwd=workdir,
                 check=False)
    assert proc.returncode == 1 and "lies inside cache_dir" in last_line(proc), proc.stderr


def test_a_closed_pipe_ends_quietly(workdir):
    bench("run", *RUN, "hydra.run.dir=first", cwd=workdir)  # cached: the second run is quick
    exe = Path(sys.executable).with_name("bench")
    line = f"'{exe}' run {' '.join(repr(a) for a in RUN)} | head -1"
    proc = subprocess.run(line, shell=True, cwd=workdir, capture_output=True, text=True,
                          timeout=300, check=False)
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_sweep_that_every_job_would_fail_stops_at_the_first(workdir):
    proc = bench("run", "-m", "dataset=folder", f"dataset.root={workdir / 'nowhere'}",
                 "defense=none,noise", *RUN[1:], "hydra.sweep.dir=sweep", cwd=workdir,
                 check=False)
    assert proc.returncode == 1, proc.stderr
    assert "sweep stopped after its first failed job: dataset is not swept" in proc.stderr
    jobs = [p for p in (workdir / "sweep").iterdir() if p.is_dir()]
    assert len(jobs) == 1  # the second job never started


def test_a_sweep_whose_every_job_fails_exits_non_zero(workdir):
    proc = bench("run", "-m", "transform.quality=101,102", *RUN, "hydra.sweep.dir=sweep",
                 cwd=workdir, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "every job of the sweep failed" in last_line(proc)
    statuses = [job_files.read_status(p)["status"] for p in (workdir / "sweep").iterdir()
                if p.is_dir()]
    assert statuses == ["failed", "failed"]  # both ran: the transform is swept


def test_slurm_where_there_is_none_is_one_line(monkeypatch):
    from omegaconf import OmegaConf

    from benchmark.safety import ConfigCheckError, check_launcher_exists

    cfg = OmegaConf.create({"hydra": {"mode": "MULTIRUN", "launcher": {
        "_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}}})
    from hydra.types import RunMode

    cfg.hydra.mode = RunMode.MULTIRUN
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigCheckError, match="there is no SLURM here"):
        check_launcher_exists(cfg)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/sbatch")
    check_launcher_exists(cfg)  # a cluster: nothing to say


@pytest.mark.parametrize("override, needle", [
    ("+bach_size=4", "bach_size: not a key of bench's config; did you mean 'batch_size'?"),
    ("strict=maybe", "strict='maybe' is invalid; expected true or false"),
    ("strict=no", "strict='no' is invalid; expected true or false"),
    ("cache_lock=no", "cache_lock='no' is invalid; expected true or false"),
    ("pairs=[fidelity,fidelity]", "fidelity given more than once"),
    ("defense=5", "defense=5: a config group takes the name of one of its configs"),
    ("seed=${nope.key}", "seed: cannot resolve '${nope.key}'"),
])
def test_top_level_mistakes_are_one_line(override, needle, workdir):
    proc = bench("run", *RUN, override, "hydra.run.dir=out", cwd=workdir, check=False)
    assert proc.returncode == 1 and needle in last_line(proc), proc.stderr
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr


def test_files_a_folder_dataset_skips_are_counted_once(tmp_path, caplog):
    from PIL import Image

    from benchmark.data.folder import FolderDataset

    Image.new("RGB", (40, 40), "gray").save(tmp_path / "a.png")
    for name in ("b.gif", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".hidden").write_bytes(b"x")
    with caplog.at_level("WARNING"):
        FolderDataset(root=str(tmp_path), resolution=32)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "2 file(s) skipped" in warnings[0] and "b.gif, notes.txt" in warnings[0]
    assert ".png" in warnings[0]  # the accepted extensions


@pytest.mark.parametrize("env, value, expected", [
    ({"SLURM_CPUS_PER_TASK": "3"}, None, (3, "SLURM_CPUS_PER_TASK")),
    ({}, 5, (5, "threads")),
])
def test_torch_threads_follow_the_allocation(env, value, expected, monkeypatch):
    from benchmark.runner import job_threads

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert job_threads(value) == expected


def test_without_slurm_threads_are_the_cpus_this_process_may_use(monkeypatch):
    from benchmark.runner import job_threads

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert job_threads(None) == (1, "the process's CPU affinity")
    with pytest.raises(BenchError, match="threads=0 is invalid"):
        job_threads(0)


def test_the_job_header_names_its_threads(workdir):
    proc = bench("run", *RUN, "threads=1", "hydra.run.dir=out", cwd=workdir)
    assert ", cpu, 1 threads" in proc.stdout
    assert json.loads((workdir / "out" / "stats.json").read_text())["threads"] == 1


def test_a_sweep_job_folder_of_a_users_files_is_refused_too(workdir):
    """In -m sweeps Hydra's plugin scan re-imports the launcher: the check must survive it."""
    folder = workdir / "sweep" / "0_mine"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("my own file")
    proc = bench("run", "-m", *RUN, "hydra.sweep.subdir=0_mine", "hydra.sweep.dir=sweep",
                 cwd=workdir, check=False)
    assert "holds files that are not a bench job's" in last_line(proc), proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
