"""The built wheel carries its configs and data: `bench` works from any directory."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installed_wheel_runs_from_another_directory(tmp_path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = dist.glob("bench-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    assert (site / "benchmark" / "configs" / "config.yaml").is_file()
    assert (site / "benchmark" / "data" / "portraits" / "faces.json").is_file()

    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import benchmark.paths as p; print(p.config_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()) == site / "benchmark" / "configs"
    listing = subprocess.run([sys.executable, str(site / "bin" / "bench"), "ls"], cwd=elsewhere,
                             env=env, capture_output=True, text=True, check=True).stdout
    assert "photoguard_encoder" in listing and "portraits" in listing
    composed = subprocess.run([sys.executable, str(site / "bin" / "bench"), "run", "--cfg", "job"],
                              cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert "PhotoGuardEncoder" in composed.stdout
