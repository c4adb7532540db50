"""What a config may ask Hydra itself to run, checked before Hydra runs any of it.

`benchmark.build` guards the components. Hydra's own part of the config can name
code too, which Hydra calls before a job starts: `hydra.callbacks` entries are
instantiated from their `_target_`, launcher and sweeper configs are instantiated
recursively (a nested `_target_` under `hydra.launcher` is called), and the
logging configs go to `logging.config.dictConfig`, which imports and calls any
`class` or `()` factory. So every composed config (the main one, each sweep job's,
`--cfg`) is checked here, and refused with one line naming the key, when

- a callback is not one of the project's own (`PROJECT_CALLBACKS`),
- any `_target_` under `hydra` other than the launcher's and sweeper's own
  (which Hydra accepts only from registered plugins) appears,
- a logging handler, formatter or filter names a class or factory outside the
  standard `logging` modules (and `colorlog`, Hydra's colour plugin), or an
  `ext://` object other than sys.stdout / sys.stderr.

`install()` wraps Hydra's config loader so that every composition passes here, and
Hydra's job runner so that an output directory it cannot write is one clear line.
"""

import functools
import os
from typing import Any

from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from benchmark.build import iter_targets
from benchmark.errors import BenchError

PROJECT_CALLBACKS = frozenset({"benchmark.callbacks.SweepSummary"})
LOGGING_MODULES = ("logging.", "colorlog.")
LOGGING_CALLABLE_KEYS = ("class", "()")
LOGGING_EXTERNALS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})


class UnsafeConfigError(BenchError, CompactHydraException):
    """A config that asks Hydra to run code the project does not ship: printed as one line."""


class OutputDirError(BenchError, CompactHydraException):
    """The job's output directory cannot be written: one line, not Hydra's traceback."""


def _check_callbacks(callbacks: Any) -> None:
    for name, params in (callbacks or {}).items():
        target = params.get("_target_") if isinstance(params, dict) else None
        if target not in PROJECT_CALLBACKS:
            raise UnsafeConfigError(
                f"hydra.callbacks.{name}: _target_ {target!r} is refused; bench runs only its "
                f"own callbacks ({', '.join(sorted(PROJECT_CALLBACKS))})")
        for where, nested in iter_targets({k: v for k, v in params.items() if k != "_target_"},
                                      f"hydra.callbacks.{name}"):
            raise UnsafeConfigError(f"{where}: _target_ {nested!r} is refused inside a callback")


def _check_plugin(section: str, config: Any) -> None:
    """Hydra builds a launcher or sweeper only from registered plugins, but recursively."""
    for where, target in iter_targets({k: v for k, v in (config or {}).items() if k != "_target_"},
                                  f"hydra.{section}"):
        raise UnsafeConfigError(f"{where}: _target_ {target!r} is refused; a {section} takes "
                                f"plain values only")


def _check_logging(section: str, config: Any) -> None:
    if not isinstance(config, dict):
        return
    for kind in ("handlers", "formatters", "filters"):
        for name, entry in (config.get(kind) or {}).items():
            if not isinstance(entry, dict):
                continue
            for key in LOGGING_CALLABLE_KEYS:
                value = entry.get(key)
                if value is not None and not str(value).startswith(LOGGING_MODULES):
                    raise UnsafeConfigError(
                        f"hydra.{section}.{kind}.{name}.{key}: {value!r} is refused; logging "
                        f"classes must come from {' or '.join(m[:-1] for m in LOGGING_MODULES)}")
            for where, target in iter_targets(entry, f"hydra.{section}.{kind}.{name}"):
                raise UnsafeConfigError(f"{where}: _target_ {target!r} is refused in logging")
            for key, value in entry.items():
                if str(value).startswith("ext://") and value not in LOGGING_EXTERNALS:
                    raise UnsafeConfigError(
                        f"hydra.{section}.{kind}.{name}.{key}: {value!r} is refused; logging "
                        f"may name only {' or '.join(sorted(LOGGING_EXTERNALS))}")


def check_hydra_config(cfg: DictConfig | dict) -> None:
    """Raise UnsafeConfigError if the `hydra` part of a composed config would run foreign code."""
    hydra_cfg = cfg.get("hydra") or {}
    if isinstance(hydra_cfg, DictConfig):  # only Hydra's section: the rest is not read here
        hydra_cfg = OmegaConf.to_container(hydra_cfg, resolve=False)
    _check_callbacks(hydra_cfg.get("callbacks"))
    _check_plugin("launcher", hydra_cfg.get("launcher"))
    _check_plugin("sweeper", hydra_cfg.get("sweeper"))
    for section in ("job_logging", "hydra_logging"):
        _check_logging(section, hydra_cfg.get(section))


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e` (logging.config wraps a handler's in a ValueError)."""
    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def _checked_run_job(run_job):
    """Hydra's run_job, with an unwritable output directory reported in one line."""

    @functools.wraps(run_job)
    def run(task_function, config, job_dir_key, job_subdir_key, *args, **kwargs):
        try:
            return run_job(task_function, config, job_dir_key, job_subdir_key, *args, **kwargs)
        except (OSError, ValueError) as e:
            directory = str(OmegaConf.select(config, "hydra.runtime.output_dir") or "")
            cause = _os_error(e)
            name = getattr(cause, "filename", None)
            name = os.path.abspath(str(name)) if name else ""
            if not (directory and name and (name.startswith(directory)
                                            or directory.startswith(name))):
                raise
            key = "hydra.sweep.dir" if job_subdir_key else "hydra.run.dir"
            raise OutputDirError(f"{key}: cannot write the job's directory {directory}: "
                                 f"{cause.strerror} ({name}); choose a writable one with "
                                 f"{key}=PATH") from e

    run.bench_checked = True
    return run


def _with_choices(e: MissingConfigException) -> MissingConfigException:
    """Hydra lists a group's choices for `group=x` but not for a list entry (`metric=[x]`)."""
    from benchmark.paths import config_dir

    group = os.path.dirname(str(e.missing_cfg_file or ""))
    folder = config_dir() / group
    if e.options or not group or not folder.is_dir():
        return e
    choices = sorted(p.stem for p in folder.glob("*.yaml"))
    return MissingConfigException(
        f"{group}: no config {os.path.basename(str(e.missing_cfg_file))!r}; choose from "
        f"{', '.join(choices)} (bench ls {group})", e.missing_cfg_file, choices)


def install() -> None:
    """Check every config Hydra composes, and its output directory (idempotent)."""
    from hydra._internal import hydra as hydra_app
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins import basic_launcher

    load = ConfigLoaderImpl.load_configuration
    if getattr(load, "bench_checked", False):
        return

    @functools.wraps(load)
    def checked_load(self, *args, **kwargs):
        try:
            cfg = load(self, *args, **kwargs)
        except MissingConfigException as e:
            raise _with_choices(e) from None
        check_hydra_config(cfg)
        return cfg

    checked_load.bench_checked = True
    ConfigLoaderImpl.load_configuration = checked_load
    for module in (hydra_app, basic_launcher):
        module.run_job = _checked_run_job(module.run_job)
