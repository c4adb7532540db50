import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmark.data.portraits import PortraitsDataset
from benchmark.images import from_pil, to_pil

# Small enough for CPU seconds: 3 portraits at 64 px, 3 PGD iterations.
TINY = ["dataset.resolution=64", "dataset.limit=3", "progress=false"]


def pytest_configure(config):
    """Under pytest-xdist (`-n`), each worker and the processes it starts (bench runs, whose
    torch takes its thread count from the CPU affinity) keep to their own share of the CPUs:
    two workers' torch threads on the same cores slow each other by several times."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    index = int(worker[2:])
    share = cpus[index::count] if count <= len(cpus) else [cpus[index % len(cpus)]]
    os.sched_setaffinity(0, share)
    torch.set_num_threads(len(share))


def pytest_collection_modifyitems(config, items):
    gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(gpu)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Pillow JPEG of each image (4:2:0), read back: a real, graded distortion."""
    out = []
    for xi in x:
        buf = io.BytesIO()
        to_pil(xi).save(buf, format="JPEG", quality=quality)
        out.append(from_pil(Image.open(io.BytesIO(buf.getvalue()))))
    return torch.stack(out)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on 2 shared cores: one thread is ~20x faster than two under contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory and a private cache for one test."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bench(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run the installed `bench` command as a user would."""
    exe = Path(sys.executable).with_name("bench")
    proc = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          env=os.environ.copy(), timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def portraits64():
    d = PortraitsDataset(resolution=64, limit=3)
    return torch.stack([d.load(i).x for i in range(len(d))])


@pytest.fixture(params=[False, True], ids=["step", "flipped_step"])
def flipped(request, monkeypatch):
    """Runs a sign test twice: as published, and with every PGD step's direction negated (the
    test must then fail its direction assertion: it asserts on `flipped`)."""
    from benchmark.defenses import pgd

    if request.param:
        direction = pgd.PGD._direction
        monkeypatch.setattr(pgd.PGD, "_direction", lambda self, g: -direction(self, g))
    return request.param
