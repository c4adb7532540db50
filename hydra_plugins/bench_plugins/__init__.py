"""Hydra's hook for bench's plugins: their config folders join the search path of bench's
config tree (benchmark.plugins), after bench's own, so a built-in config is never shadowed."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class BenchPluginConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from benchmark.paths import config_dir
        from benchmark.plugins import plugins

        ours = str(config_dir())
        if not any(element.path.removeprefix("file://") == ours
                   for element in search_path.get_path()):
            return  # another Hydra app in this environment: not bench's business
        for plugin in plugins():
            if plugin.configs is not None:
                search_path.append(f"bench-plugin-{plugin.name}", f"file://{plugin.configs}")
