"""Hydra callbacks of `bench run -m`.

`SweepSummary` runs on the machine that launched the sweep (also with the
SLURM and submitit_local launchers, whose jobs run elsewhere) once every job
has returned, and writes `sweep_summary.csv` at the sweep root: every finished
job's summary rows with the job's directory, and one row per failed or
unfinished job with its status and the last line of its error.
"""

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# what the last sweep of this process ended with: `bench run` exits non-zero when no job is done
LAST_SWEEP: dict = {}


class SweepSummary(Callback):
    def __init__(self, filename: str = "sweep_summary.csv"):
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from benchmark.paths import confined
        from benchmark.results.job_files import sweep_summary, write_atomic

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = sweep_summary(sweep_dir)
        path = confined(sweep_dir, self.filename, "hydra.callbacks.sweep_summary.filename")
        write_atomic(path, summary.to_csv(index=False))
        jobs = summary.drop_duplicates("job")
        counts = jobs["status"].value_counts().to_dict()
        failed = jobs[jobs["status"] != "done"]["job"].tolist()
        LAST_SWEEP.clear()
        if failed and len(failed) == len(jobs):
            LAST_SWEEP["failed_all"] = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        log.info("sweep: %d jobs (%s); summary in %s", len(jobs),
                 ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), path)
        if failed:
            log.warning("jobs not done (re-run the same sweep with hydra.sweep.dir=%s to retry "
                        "them; finished jobs are skipped): %s", sweep_dir, ", ".join(failed))
