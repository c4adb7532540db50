"""Components from outside the repository: an installed plugin package (examples/plugin) and a
one-off `--plugin` script; a config can still never add a module (issue 23)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(sys.executable).with_name("bench")
RUN = ["transform=jpeg", "metric=[psnr]", "pairs=[fidelity,invisibility]", "dataset.limit=2",
       "dataset.resolution=32", "progress=false"]


def bench(*args: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BENCH), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """examples/plugin built as a wheel and installed where this Python finds it (PYTHONPATH),
    the way `pip install` puts any package: bench finds it by its entry point alone."""
    root = tmp_path_factory.mktemp("plugin")
    dist, site = root / "dist", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO / "examples" / "plugin")], check=True, capture_output=True)
    (wheel,) = dist.glob("bench_lowfreq-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return site


@pytest.fixture
def env(installed, tmp_path):
    return {**os.environ, "PYTHONPATH": str(installed), "BENCH_CACHE": str(tmp_path / "cache")}


def test_an_installed_plugin_is_listed_swept_beside_built_ins_and_tabulated(env, tmp_path):
    listing = bench("ls", "defense", cwd=tmp_path, env=env).stdout
    (line,) = [line for line in listing.splitlines() if "lowfreq_noise" in line]
    assert "[plugin bench-lowfreq 0.1.0]" in line
    assert "bench_lowfreq" in bench("ls", "--plugins", cwd=tmp_path, env=env).stdout
    bench("run", "-m", "defense=lowfreq_noise,noise,none", *RUN, "hydra.sweep.dir=sweep",
          cwd=tmp_path, env=env)
    table = bench("table", "sweep", "--metric", "psnr", "--pair", "invisibility",
                  cwd=tmp_path, env=env).stdout
    rows = [line for line in table.splitlines() if line.startswith("|") and "psnr" not in line]
    assert {r.split("|")[1].strip() for r in rows} >= {"lowfreq_noise", "noise", "none"}, table


def test_the_plugin_passes_its_conformance_tests(env, tmp_path):
    tests = REPO / "examples" / "plugin" / "tests"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout


@pytest.fixture
def unregistered(tmp_path):
    """An installed package with a component-shaped class but no bench.plugins entry point;
    importing it creates a file: the proof that a config made bench import it."""
    site = tmp_path / "site"
    package = site / "innocent"
    package.mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from benchmark.transforms.base import Transform\n\n"
        "class Grey(Transform):\n    def forward(self, x, seeds):\n        return x * 0 + 0.5\n")
    return site, marker


def test_a_module_without_an_entry_point_is_refused_before_it_is_imported(unregistered,
                                                                          tmp_path):
    site, marker = unregistered
    env = {**os.environ, "PYTHONPATH": str(site), "BENCH_CACHE": str(tmp_path / "cache")}
    proc = bench("run", "defense=none", *RUN, "transform._target_=innocent.Grey",
                 "hydra.run.dir=out", cwd=tmp_path, env=env, check=False)
    assert not marker.exists(), "a config made bench import a module that is no plugin"
    assert proc.returncode == 1 and "is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_plugin_script_on_the_command_line_runs_and_reaches_the_jobs(tmp_path):
    script = tmp_path / "grey_purifier.py"
    script.write_text('"""A test purifier: every pixel grey."""\n'
                      "from benchmark.transforms.base import Transform\n\n"
                      "class Grey(Transform):\n    name = 'grey'\n\n"
                      "    def forward(self, x, seeds):\n        return x * 0 + 0.5\n")
    configs = tmp_path / "configs" / "transform"
    configs.mkdir(parents=True)
    (configs / "grey.yaml").write_text("# every pixel grey\n_target_: grey_purifier.Grey\n")
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache")}
    run = ["defense=none", *RUN[1:], "transform=grey"]
    refused = bench("run", *run, "hydra.run.dir=no", cwd=tmp_path, env=env, check=False)
    assert refused.returncode == 1  # without --plugin its config is not even found
    bench("run", "--plugin", str(script), "-m", *run, "hydra.sweep.dir=sweep", cwd=tmp_path,
          env=env)
    table = bench("table", "sweep", "--metric", "psnr", "--pair", "fidelity", cwd=tmp_path,
                  env=env).stdout
    assert "grey" in table
    listing = bench("ls", "--plugin", str(script), "transform", cwd=tmp_path, env=env).stdout
    assert f"[--plugin {script}]" in listing
