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


def test_the_shipped_hydra_config_passes():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from benchmark.paths import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        for launcher in ("slurm", "submitit_local"):  # ray is an optional extra
            cfg = compose("config", [f"hydra/launcher={launcher}"], return_hydra_config=True)
            check_hydra_config(cfg)  # must not raise
    GlobalHydra.instance().clear()


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
