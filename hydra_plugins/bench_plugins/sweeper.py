"""bench's sweeper (hydra/sweeper=bench, the default): Hydra's basic sweeper, except that a job
whose directory already holds its finished results under the same launch key
(benchmark.launch_keys) is skipped without composing its config, and every other job is
composed once: the config composed to validate the batch is the one the launcher runs."""

import logging
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext

log = logging.getLogger(__name__)

# composed configs kept between validation and launch; beyond this many a batch composes twice
MAX_KEPT = 1000


class ReusingConfigLoader:
    """Hydra's config loader, serving each job's config once from what the sweeper composed."""

    def __init__(self, loader, composed: dict):
        self.loader, self.composed = loader, composed

    def load_sweep_config(self, master_config, sweep_overrides):
        config = self.composed.pop(tuple(sweep_overrides), None)
        if config is None:
            config = self.loader.load_sweep_config(master_config, sweep_overrides)
        return config

    def __getattr__(self, name):
        if name.startswith("__") or name in ("loader", "composed"):
            raise AttributeError(name)  # unpickling: no delegation before __dict__ is set
        return getattr(self.loader, name)

    def __getstate__(self) -> dict:
        # a launcher that ships itself to its workers (submitit) must not carry every config
        return {"loader": self.loader, "composed": {}}


class SkipFinished:
    """The launcher, given only the jobs that have not finished (numbered as in the sweep)."""

    def __init__(self, launcher, sweeper: "BenchSweeper"):
        self.launcher, self.sweeper = launcher, sweeper

    def launch(self, job_overrides, initial_job_idx: int):
        finished = self.sweeper.finished
        returns, pending, start = [], [], initial_job_idx
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            done = finished.get(idx)
            if done is None:
                if not pending:
                    start = idx
                pending.append(overrides)
                continue
            if pending:
                returns += self.launcher.launch(pending, initial_job_idx=start)
                pending = []
            print(f"skipped (finished, same config): {done}")
            returns.append(JobReturn(overrides=list(overrides), working_dir=str(done),
                                     status=JobStatus.COMPLETED))
        if pending:
            returns += self.launcher.launch(pending, initial_job_idx=start)
        return returns

    def __getattr__(self, name):
        if name.startswith("__") or name in ("launcher", "sweeper"):
            raise AttributeError(name)
        return getattr(self.launcher, name)


class BenchSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function, config) -> None:
        self.composed: dict = {}
        self.finished: dict[int, Path] = {}
        self.next_idx = 0
        loader = ReusingConfigLoader(hydra_context.config_loader, self.composed)
        super().setup(hydra_context=HydraContext(config_loader=loader,
                                                 callbacks=hydra_context.callbacks),
                      task_function=task_function, config=config)
        self.launcher = SkipFinished(self.launcher, self)

    def validate_batch_is_legal(self, batch) -> None:
        """Composes each unfinished job of the batch (a bad override fails before any job runs)
        and keeps it for the launcher; finds the finished ones by their launch keys."""
        from benchmark.launch_keys import finished_launches, launch_key, source_paths

        hydra_cfg = self.config.hydra
        sources = source_paths(hydra_cfg)
        done = finished_launches(Path(hydra_cfg.sweep.dir))
        self.finished.clear()
        self.composed.clear()
        for idx, overrides in enumerate(batch, self.next_idx):
            where = done.get(launch_key(overrides, hydra_cfg.job.config_name, sources))
            if where is not None and where.name.startswith(f"{idx}_"):
                self.finished[idx] = where
                continue
            config = self.hydra_context.config_loader.loader.load_sweep_config(
                self.config, list(overrides))
            if len(self.composed) < MAX_KEPT:
                self.composed[tuple(overrides)] = config
        self.next_idx += len(batch)
