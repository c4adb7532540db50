"""Submitit launchers that run several jobs of a sweep in one array task (hydra/launcher=slurm,
or bench_local on this machine): `group_by: [defense]` puts the jobs that share their defense
(all its transforms x generators) in one task, one after another in one process, so that its
models (benchmark.models.shared) and the images it decoded are loaded once, not once per job.
`group_by: []` is one job per task, as submitit's own launchers do.

The grouping sits between submitit's launcher and its executor: the launcher asks for one
array task per job; the executor is handed one per group, and each job's result is read back
from its group's task, so that job numbers, folders and results are exactly those of an
ungrouped sweep."""

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher


def group_of(overrides, keys) -> tuple:
    """The values a job's overrides give the grouping keys (`defense=noise` -> noise)."""
    given = dict(str(o).lstrip("+").split("=", 1) for o in overrides if "=" in str(o))
    return tuple(given.get(k) for k in keys)


class JobGroup:
    """One array task: the jobs of one group, in order; a job's error ends only that job."""

    def __init__(self, launcher):
        self.launcher = launcher

    def __call__(self, members):
        returns = []
        for args in members:
            returns.append(self.launcher(*args))
        return returns

    def checkpoint(self, members):
        import submitit

        # preempted: the whole group again; its finished jobs are skipped by their status
        return submitit.helpers.DelayedSubmission(self, members)


class MemberOf:
    """A job's handle: its result, read from its group's task."""

    def __init__(self, task, index: int):
        self.task, self.index = task, index

    def results(self):
        return [self.task.results()[0][self.index]]


class GroupingLauncher:
    """Mixin for submitit's launchers: `group_by` keys, one array task per group."""

    def __init__(self, group_by=(), **params):
        super().__init__(**params)
        self.group_by = [str(k) for k in (group_by or [])]

    def launch(self, job_overrides, initial_job_idx: int):
        if not self.group_by:
            return super().launch(job_overrides, initial_job_idx)
        import submitit

        submit = submitit.AutoExecutor.map_array
        keys = self.group_by

        def grouped(executor, fn, *columns):
            jobs = list(zip(*columns))  # (overrides, dir key, num, id, state) per job
            groups: dict[tuple, list[int]] = defaultdict(list)
            for i, job in enumerate(jobs):
                groups[group_of(job[0], keys)].append(i)
            members = [[jobs[i] for i in idx] for idx in groups.values()]
            tasks = submit(executor, JobGroup(fn), members)
            handles = [None] * len(jobs)
            for task, idx in zip(tasks, groups.values()):
                for k, i in enumerate(idx):
                    handles[i] = MemberOf(task, k)
            return handles

        with _replaced(submitit.AutoExecutor, "map_array", grouped):
            return super().launch(job_overrides, initial_job_idx)


@contextlib.contextmanager
def _replaced(owner, name: str, value):
    """`owner.name` is `value` inside the block (an inherited attribute is inherited again)."""
    own = name in owner.__dict__
    original = owner.__dict__.get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)


class GroupedSlurmLauncher(GroupingLauncher, SlurmLauncher):
    pass


class GroupedLocalLauncher(GroupingLauncher, LocalLauncher):
    pass


@dataclass
class GroupedSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.bench_plugins.grouped.GroupedSlurmLauncher"
    group_by: list = field(default_factory=list)


@dataclass
class GroupedLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.bench_plugins.grouped.GroupedLocalLauncher"
    group_by: list = field(default_factory=list)


ConfigStore.instance().store(group="hydra/launcher", name="bench_slurm", node=GroupedSlurmConf,
                             provider="bench")
ConfigStore.instance().store(group="hydra/launcher", name="bench_local", node=GroupedLocalConf,
                             provider="bench")
