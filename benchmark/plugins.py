"""Components from outside the repository: installed plugin packages and one-off scripts.

The trust is placed where a user acts, never in a config file:

- an installed package that declares an entry point in the group `bench.plugins`
  (`[project.entry-points."bench.plugins"] my_defense = "my_defense"`): installing a
  package is the act of trust, as with pytest plugins;
- a script or package folder named on the command line, `bench run --plugin PATH`, which
  reaches a sweep's job processes through the environment variable BENCH_PLUGINS (what the
  flag sets; a config file cannot set it).

A plugin's module (and its submodules) then counts as a component package for
`benchmark.build`: the same rule as for built-ins holds (a class defined in that module,
subclassing a stage base class). A config can still never add a module: one of an installed
package without the entry point is refused like any other. A plugin's `configs/` folder
(next to its `__init__.py`, or next to the script) joins Hydra's search path
(hydra_plugins/bench_plugins), so `bench run defense=my_defense` and sweeps beside the
built-ins just work.
"""

import functools
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from benchmark.errors import BenchError

ENTRY_POINT_GROUP = "bench.plugins"
PLUGINS_VARIABLE = "BENCH_PLUGINS"


@dataclass(frozen=True)
class Plugin:
    name: str
    module: str  # components are classes defined in this module or its submodules
    configs: Path | None  # its config tree (groups as folders), if it ships one
    origin: str  # where it came from, as `bench ls` shows it


def _configs_next_to(path: Path) -> Path | None:
    folder = path.parent / "configs"
    return folder if folder.is_dir() else None


def _from_entry_point(point) -> Plugin:
    module_name = point.value.split(":")[0].strip()
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a broken plugin names itself instead of breaking bench
        raise BenchError(f"plugin {point.name!r} (entry point {ENTRY_POINT_GROUP}: "
                         f"{point.value}) cannot be imported: {e}") from e
    dist = getattr(point, "dist", None)
    version = f" {dist.version}" if dist is not None else ""
    package = f"{dist.name}{version}" if dist is not None else point.value
    return Plugin(point.name, module_name, _configs_next_to(Path(module.__file__)),
                  f"plugin {package}")


def load_script(path: str | Path) -> Plugin:
    """Import a plugin script (`x.py`) or package folder (`x/__init__.py`) as module `x`."""
    path = Path(path).expanduser().resolve()
    init = path / "__init__.py" if path.is_dir() else path
    if not init.is_file() or init.suffix != ".py":
        raise BenchError(f"--plugin {path}: expected a Python file (.py) or a package folder "
                         f"holding __init__.py")
    name = path.stem if path.is_file() else path.name
    if not name.isidentifier():
        raise BenchError(f"--plugin {path}: {name!r} is not a Python module name")
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == init:
        return Plugin(name, name, _configs_next_to(init), f"--plugin {path}")
    if loaded is not None or importlib.util.find_spec(name) is not None:
        raise BenchError(f"--plugin {path}: a module named {name!r} already exists; rename the "
                         f"plugin so that it cannot stand in for another module")
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(path)] if path.is_dir() else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise BenchError(f"--plugin {path}: importing it failed: {e}") from e
    return Plugin(name, name, _configs_next_to(init), f"--plugin {path}")


@functools.cache
def plugins() -> tuple[Plugin, ...]:
    """Every plugin of this process: installed entry points, then BENCH_PLUGINS' paths."""
    found = [_from_entry_point(p) for p in entry_points(group=ENTRY_POINT_GROUP)]
    found += [load_script(p) for p in os.environ.get(PLUGINS_VARIABLE, "").split(os.pathsep)
              if p.strip()]
    return tuple(found)


def add_scripts(paths: list[str]) -> None:
    """`--plugin PATH...`: for this process and, through the environment, its sweep's jobs."""
    if not paths:
        return
    known = [p for p in os.environ.get(PLUGINS_VARIABLE, "").split(os.pathsep) if p.strip()]
    resolved = [str(Path(p).expanduser().resolve()) for p in paths]
    os.environ[PLUGINS_VARIABLE] = os.pathsep.join(dict.fromkeys(known + resolved))
    plugins.cache_clear()
    plugins()  # import them now: a broken one stops before Hydra composes anything


def plugin_of(module_name: str) -> Plugin | None:
    """The plugin that `module_name` belongs to, if any."""
    for plugin in plugins():
        if module_name == plugin.module or module_name.startswith(plugin.module + "."):
            return plugin
    return None
