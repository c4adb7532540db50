import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.data.portraits import PortraitsDataset

# Small enough for CPU seconds: 3 portraits at 64 px, 3 PGD iterations.
TINY = ["dataset.resolution=64", "dataset.limit=3", "progress=false"]


def pytest_collection_modifyitems(config, items):
    gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(gpu)


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
                          env=os.environ.copy(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def portraits64():
    d = PortraitsDataset(resolution=64, limit=3)
    return torch.stack([d.load(i).x for i in range(len(d))])
