"""What a composed config may ask Hydra itself to do, checked before Hydra does any of it.

`benchmark.build` guards the components. Hydra's own section can name code and files
too: `hydra.callbacks` are instantiated from their `_target_`, launchers and sweepers
recursively, logging configs go to `logging.config.dictConfig` (which imports any
`class` or `()` factory and opens any `filename`), the SLURM launcher runs `setup` lines
in a shell, and `output_subdir`, the sweep's `subdir` and the callbacks' file names say
where files are written. A shared preset, a `--config-dir` folder or a pasted override
may set any of these, also indirectly: an interpolation lets a checked key take its
value (a whole `{_target_: ...}` node) from an unchecked one.

So every composed config (the main one, each sweep job's, `--cfg`) is **resolved** here,
interpolations and all, and its `hydra` section must pass an allow-list:

- only the keys in HYDRA_KEYS; `_target_`s only as the launcher's and sweeper's own
  (LAUNCHERS, SWEEPERS) and as the project's callbacks (PROJECT_CALLBACKS, with their
  parameters), nowhere else at any depth;
- logging handlers, formatters and filters from LOGGING_CLASSES with LOGGING_KEYS only,
  `ext://` objects from LOGGING_EXTERNALS only, log files only inside the job's directory;
- every path bench or Hydra writes below the run or sweep directory relative and inside
  it (`benchmark.paths.confined`);
- `hydra.job.env_set` only for ENV_NAMES; the launcher's SHELL_KEYS only as shipped in
  configs/hydra/launcher/ or typed on the command line.

Values Hydra fills in later (`hydra.job.num`, `hydra.runtime.output_dir`) stay as written;
the paths made of them are checked again when the job's directory is known (`install()`
wraps Hydra's job runner). An interpolation that cannot be resolved anywhere in the
config is one line naming its key.
"""

import functools
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    InterpolationToMissingValueError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from benchmark.build import check_target_name, iter_targets
from benchmark.errors import BenchError
from benchmark.paths import confined

PROJECT_CALLBACKS = {"benchmark.callbacks.SweepSummary": frozenset({"filename"})}
LAUNCHERS = frozenset({
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
    "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
    "hydra_plugins.bench_plugins.grouped.GroupedSlurmLauncher",
    "hydra_plugins.bench_plugins.grouped.GroupedLocalLauncher",
})
SWEEPERS = frozenset({"hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                      "hydra_plugins.bench_plugins.sweeper.BenchSweeper"})
HYDRA_KEYS = frozenset({"run", "sweep", "launcher", "sweeper", "help", "hydra_help",
                        "hydra_logging", "job_logging", "env", "mode", "searchpath",
                        "callbacks", "output_subdir", "overrides", "job", "runtime",
                        "verbose"})
LOGGING_CLASSES = {
    "handlers": frozenset({"logging.StreamHandler", "logging.FileHandler",
                           "logging.NullHandler", "colorlog.StreamHandler"}),
    "formatters": frozenset({"logging.Formatter", "colorlog.ColoredFormatter"}),
    "filters": frozenset({"logging.Filter"}),
}
LOGGING_KEYS = {
    "handlers": frozenset({"class", "formatter", "level", "filters", "stream", "filename",
                           "mode", "encoding", "delay"}),
    "formatters": frozenset({"class", "()", "format", "datefmt", "style", "validate",
                             "log_colors", "reset", "secondary_log_colors"}),
    "filters": frozenset({"class", "()", "name"}),
}
LOGGING_EXTERNALS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
ENV_NAMES = frozenset({"CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                       "TOKENIZERS_PARALLELISM", "PYTHONHASHSEED"})
SHELL_KEYS = ("setup", "additional_parameters")
JOB_DIR = "${hydra.runtime.output_dir}"
VERBATIM = ("hydra.overrides", "hydra.job.override_dirname")  # command-line text, never resolved


class UnsafeConfigError(BenchError, CompactHydraException):
    """A config that asks Hydra to run code or write files bench does not allow: one line."""


class UnresolvableConfigError(BenchError, CompactHydraException):
    """An interpolation that cannot be resolved: one line naming its key."""


class ConfigCheckError(BenchError, CompactHydraException):
    """A composed config that fails one of bench's checks: one line, not Hydra's traceback."""


class OutputDirError(BenchError, CompactHydraException):
    """The job's output directory cannot be written: one line, not Hydra's traceback."""


# -- resolving --------------------------------------------------------------------------------

def _resolved(node: Any, where: str) -> Any:
    """`node` as plain containers with every interpolation resolved; values Hydra fills in only
    later (missing now, or read through its `hydra:` resolver) are kept as written, and so is
    the text of the command line's overrides (`hydra.overrides`), which Hydra never resolves."""
    if isinstance(node, DictConfig):
        return {key: _child(node, key, f"{where}.{key}" if where else str(key))
                for key in node}
    if isinstance(node, ListConfig):
        return [_child(node, i, f"{where}[{i}]") for i in range(len(node))]
    return node


def _child(parent: DictConfig | ListConfig, key: Any, where: str) -> Any:
    node = parent._get_node(key)
    if where in VERBATIM:
        return (OmegaConf.to_container(node, resolve=False)
                if isinstance(node, (DictConfig, ListConfig)) else node._value())
    raw = node._value()
    try:
        value = parent[key]
    except (MissingMandatoryValue, InterpolationToMissingValueError):
        return raw
    except OmegaConfBaseException as e:
        if "HydraConfig was not set" in str(e):
            return raw
        reason = str(e).splitlines()[0]
        raise UnresolvableConfigError(f"{where}: cannot resolve {raw!r}: {reason}") from None
    return _resolved(value, where)


def resolved_config(cfg: DictConfig) -> dict:
    """The whole config resolved, or UnresolvableConfigError naming the first bad key (the
    job's own keys first: an error there is the user's, not Hydra's text made of it)."""
    keys = sorted(cfg.keys(), key=lambda k: k == "hydra")
    return {key: _child(cfg, key, str(key)) for key in keys}


# -- the hydra section ----------------------------------------------------------------------

def _refuse(where: str, why: str):
    raise UnsafeConfigError(f"{where}: {why}")


def _check_targets(hydra_cfg: dict) -> None:
    for where, target in iter_targets(hydra_cfg, "hydra"):
        if where == "hydra.launcher" and target in LAUNCHERS:
            continue
        if where == "hydra.sweeper" and target in SWEEPERS:
            continue
        parts = where.split(".")
        if len(parts) == 3 and parts[1] == "callbacks":
            if target not in PROJECT_CALLBACKS:
                _refuse(where, f"_target_ {target!r} is refused; bench runs only its own "
                               f"callbacks ({', '.join(sorted(PROJECT_CALLBACKS))})")
            _check_callback(where, target, hydra_cfg["callbacks"][parts[2]])
            continue
        _refuse(where, f"_target_ {target!r} is refused; the hydra section may name only the "
                       f"registered launcher and sweeper and bench's own callbacks")


def _check_callback(where: str, target: str, params: dict) -> None:
    for key, value in params.items():
        if key == "_target_":
            continue
        if key not in PROJECT_CALLBACKS[target]:
            _refuse(f"{where}.{key}", f"unknown parameter of {target} (it takes "
                                      f"{', '.join(sorted(PROJECT_CALLBACKS[target]))})")
        if key == "filename":
            relative_name(value, f"{where}.{key}")


def relative_name(value: Any, key: str) -> str:
    """A path that must stay below a directory it is joined to: relative, no `..`."""
    if not isinstance(value, str):
        _refuse(key, f"{value!r} is refused; expected a relative path (a string)")
    try:
        confined(".", value, key, follow_links=False)
    except BenchError as e:
        raise UnsafeConfigError(str(e)) from None
    return value


def _walk_strings(node: Any, where: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def _check_logging(section: str, config: Any) -> None:
    if not isinstance(config, dict):
        return
    where = f"hydra.{section}"
    for path, text in _walk_strings(config, where):
        if text.startswith("ext://") and text not in LOGGING_EXTERNALS:
            _refuse(path, f"{text!r} is refused; logging may name only "
                          f"{' or '.join(sorted(LOGGING_EXTERNALS))}")
    for kind, classes in LOGGING_CLASSES.items():
        for name, entry in (config.get(kind) or {}).items():
            if not isinstance(entry, dict):
                continue
            for key, value in entry.items():
                if key not in LOGGING_KEYS[kind]:
                    _refuse(f"{where}.{kind}.{name}.{key}",
                            f"refused; a logging {kind[:-1]} may set only "
                            f"{', '.join(sorted(LOGGING_KEYS[kind]))}")
                if key in ("class", "()") and value not in classes:
                    _refuse(f"{where}.{kind}.{name}.{key}",
                            f"{value!r} is refused; logging {kind} may be "
                            f"{', '.join(sorted(classes))}")
            if "filename" in entry:
                if section != "job_logging":
                    _refuse(f"{where}.{kind}.{name}.filename",
                            "refused; Hydra's own log goes to the console only")
                log_file_name(entry["filename"], f"{where}.{kind}.{name}.filename")


def log_file_name(value: Any, key: str) -> str:
    """A job log file is `${hydra.runtime.output_dir}/<relative name>`: the name below it."""
    text = str(value)
    if not text.startswith(JOB_DIR + "/"):
        _refuse(key, f"{text!r} is refused; a log file must be {JOB_DIR}/NAME (inside the "
                     f"job's directory)")
    return relative_name(text[len(JOB_DIR) + 1:], key)


def _check_job(job: dict) -> None:
    name = job.get("name")
    if name is not None and (not isinstance(name, str) or "/" in name or name in ("", ".", "..")):
        _refuse("hydra.job.name", f"{name!r} is refused; expected a plain name (no '/')")
    for var in job.get("env_set") or {}:
        if var not in ENV_NAMES:
            _refuse(f"hydra.job.env_set.{var}", f"refused; a job may set only "
                                                f"{', '.join(sorted(ENV_NAMES))}")


def _command_line_keys(hydra_cfg: dict) -> set[str]:
    overrides = (hydra_cfg.get("overrides") or {})
    keys = set()
    for text in [*(overrides.get("hydra") or []), *(overrides.get("task") or [])]:
        key = str(text).lstrip("+~").split("=", 1)[0]
        keys.add(key)
    return keys


def _check_launcher(hydra_cfg: dict, raw_launcher: Any) -> None:
    """Lines a launcher runs in a shell come from the shipped file or the command line."""
    from benchmark.paths import config_dir

    launcher = hydra_cfg.get("launcher") or {}
    choice = ((hydra_cfg.get("runtime") or {}).get("choices") or {}).get("hydra/launcher")
    shipped_file = config_dir() / "hydra" / "launcher" / f"{choice}.yaml"
    shipped = OmegaConf.to_container(OmegaConf.load(shipped_file)) if shipped_file.is_file() else {}
    typed = _command_line_keys(hydra_cfg)
    for key in SHELL_KEYS:
        raw = raw_launcher.get(key) if isinstance(raw_launcher, dict) else None
        if not launcher.get(key) or raw == shipped.get(key) or f"hydra.launcher.{key}" in typed:
            continue
        _refuse(f"hydra.launcher.{key}", "refused from a config file: these are run as shell "
                                         "commands or sbatch options; give them on the command "
                                         f"line (hydra.launcher.{key}=...)")
    folder, sweep_dir = launcher.get("submitit_folder"), (hydra_cfg.get("sweep") or {}).get("dir")
    if folder is not None and sweep_dir is not None:
        relative = os.path.relpath(os.path.normpath(str(folder)), os.path.normpath(str(sweep_dir)))
        relative_name(relative, "hydra.launcher.submitit_folder")


def _check_paths(hydra_cfg: dict) -> None:
    if hydra_cfg.get("output_subdir") is not None:
        relative_name(hydra_cfg["output_subdir"], "hydra.output_subdir")
    subdir = (hydra_cfg.get("sweep") or {}).get("subdir")
    if isinstance(subdir, str) and "${" not in subdir:
        relative_name(subdir, "hydra.sweep.subdir")
    for i, entry in enumerate(hydra_cfg.get("searchpath") or []):
        if not str(entry).startswith("file://"):
            _refuse(f"hydra.searchpath[{i}]", f"{entry!r} is refused; add config folders as "
                                              f"file://PATH (a pkg:// entry imports a package)")


def check_hydra_config(cfg: DictConfig | dict) -> None:
    """Raise UnsafeConfigError if the `hydra` part of a composed config would run foreign code
    or write outside the job's directory, UnresolvableConfigError if an interpolation fails."""
    if isinstance(cfg, DictConfig):
        plain = resolved_config(cfg)
        raw_hydra = (OmegaConf.to_container(cfg.hydra, resolve=False) if "hydra" in cfg else {})
    else:
        plain, raw_hydra = cfg, cfg.get("hydra") or {}
    hydra_cfg = plain.get("hydra") or {}
    for key in hydra_cfg:
        if key not in HYDRA_KEYS:
            _refuse(f"hydra.{key}", f"refused; the hydra section may set only "
                                    f"{', '.join(sorted(HYDRA_KEYS))}")
    _check_targets(hydra_cfg)
    for section in ("job_logging", "hydra_logging"):
        _check_logging(section, hydra_cfg.get(section))
    _check_job(hydra_cfg.get("job") or {})
    _check_launcher(hydra_cfg, raw_hydra.get("launcher"))
    _check_paths(hydra_cfg)
    for where, target in iter_targets({k: v for k, v in plain.items() if k != "hydra"}, ""):
        try:
            check_target_name(target, where.lstrip("."))
        except BenchError as e:
            raise UnsafeConfigError(str(e)) from None


def check_launcher_exists(cfg: DictConfig) -> None:
    """A SLURM sweep where there is no SLURM: one line instead of submitit's traceback."""
    from hydra.types import RunMode

    target = OmegaConf.select(cfg, "hydra.launcher._target_", default=None)
    mode = OmegaConf.select(cfg, "hydra.mode", default=None)
    if (target in ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                   "hydra_plugins.bench_plugins.grouped.GroupedSlurmLauncher")
            and mode == RunMode.MULTIRUN and shutil.which("sbatch") is None):
        raise ConfigCheckError("hydra/launcher=slurm: there is no SLURM here (no sbatch on "
                               "PATH); run the sweep on the cluster's login node, or here with "
                               "hydra/launcher=submitit_local (parallel processes) or without "
                               "hydra/launcher (one job after another)")


def check_composed(cfg: DictConfig) -> None:
    """Every check of a composed config that needs no job directory, as one-line errors."""
    from benchmark.settings import check_settings

    check_hydra_config(cfg)
    if OmegaConf.select(cfg, "hydra.job.config_name", default=None) == "config":
        try:
            check_settings(cfg)
        except BenchError as e:
            raise ConfigCheckError(str(e)) from None
    check_launcher_exists(cfg)


# -- when the job's directory is known ------------------------------------------------------

def check_job_paths(config: DictConfig, output_dir: str, sweep_dir: str | None) -> None:
    """The paths below the job's directory, now that it is known, links followed."""
    if sweep_dir is not None:
        confined(sweep_dir, os.path.relpath(os.path.abspath(output_dir),
                                            os.path.abspath(sweep_dir)), "hydra.sweep.subdir")
    subdir = OmegaConf.select(config, "hydra.output_subdir")
    if subdir is not None:
        confined(output_dir, str(subdir), "hydra.output_subdir")
    handlers = OmegaConf.select(config, "hydra.job_logging.handlers") or {}
    for name in handlers:
        raw = handlers[name]._get_node("filename") if "filename" in handlers[name] else None
        if raw is not None:
            rest = log_file_name(raw._value(), f"hydra.job_logging.handlers.{name}.filename")
            rest = rest.replace("${hydra.job.name}", str(OmegaConf.select(config,
                                                                          "hydra.job.name")))
            confined(output_dir, rest, f"hydra.job_logging.handlers.{name}.filename")


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e` (logging.config wraps a handler's in a ValueError)."""
    seen = 0
    while e is not None and seen < 5:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def _job_dir(config: DictConfig, job_dir_key: str, job_subdir_key: str | None) -> str:
    output_dir = str(OmegaConf.select(config, job_dir_key))
    if job_subdir_key is not None:
        output_dir = os.path.join(output_dir, str(OmegaConf.select(config, job_subdir_key)))
    return output_dir


def _checked_run_job(run_job):
    """Hydra's run_job: the job's paths checked first; an unwritable directory in one line."""

    @functools.wraps(run_job)
    def run(task_function, config, job_dir_key, job_subdir_key, *args, **kwargs):
        from benchmark.results.job_files import check_job_dir

        try:
            output_dir = _job_dir(config, job_dir_key, job_subdir_key)
        except OmegaConfBaseException:
            output_dir = None  # Hydra reports it
        if output_dir is not None:
            sweep_dir = str(config.hydra.sweep.dir) if job_subdir_key else None
            try:
                check_job_paths(config, output_dir, sweep_dir)
                check_job_dir(Path(output_dir))
            except UnsafeConfigError:
                raise
            except BenchError as e:
                raise UnsafeConfigError(str(e)) from None
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


def _group_value_message(overrides: list[str] | None) -> str:
    """`defense=5`: Hydra's message names neither the group nor its choices."""
    from benchmark.paths import config_dir

    for text in overrides or []:
        group, _, value = str(text).lstrip("+~").partition("=")
        folder = config_dir() / group
        number = value.lstrip("-").replace(".", "", 1).isdigit()
        if folder.is_dir() and (number or value.startswith("{")):
            choices = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
            return (f"{group}={value}: a config group takes the name of one of its configs; "
                    f"choose from {choices} (bench ls {group})")
    return "a config group was given a number or a mapping; it takes a config name"


def _one_line_errors(run_and_report):
    """Hydra prints a compact error and then a hint about HYDRA_FULL_ERROR: bench's errors (and
    Hydra's compact ones) are the whole message, one line, exit code 1."""

    @functools.wraps(run_and_report)
    def report(func):
        def bench_errors_first():
            try:
                return func()
            except (BenchError, CompactHydraException) as e:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else ""
                print(f"{e}\n{cause}".rstrip(), file=sys.stderr)
                sys.exit(1)

        return run_and_report(bench_errors_first)

    return report


def install() -> None:
    """Check every config Hydra composes, and its output directory (idempotent)."""
    from hydra._internal import hydra as hydra_app
    from hydra._internal import utils as hydra_utils
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins import basic_launcher
    from hydra.core import utils as core_utils

    load = ConfigLoaderImpl.load_configuration
    if getattr(load, "bench_checked", False):
        return

    @functools.wraps(load)
    def checked_load(self, *args, **kwargs):
        try:
            cfg = load(self, *args, **kwargs)
        except MissingConfigException as e:
            raise _with_choices(e) from None
        except ValueError as e:
            if "Config group override must be a string" not in str(e):
                raise
            raise ConfigCheckError(_group_value_message(args[1] if len(args) > 1
                                                        else kwargs.get("overrides"))) from None
        check_composed(cfg)
        return cfg

    checked_load.bench_checked = True
    ConfigLoaderImpl.load_configuration = checked_load
    hydra_utils.run_and_report = _one_line_errors(hydra_utils.run_and_report)
    # At the source too: Hydra's plugin scan re-imports the launcher modules, whose
    # `from hydra.core.utils import run_job` would otherwise bring the unchecked one back.
    checked_run_job = _checked_run_job(core_utils.run_job)
    for module in (core_utils, hydra_app, basic_launcher):
        module.run_job = checked_run_job
