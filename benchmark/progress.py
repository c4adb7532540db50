"""The job's progress bars: one per stage, and the attack's iteration inside a batch.

A stage bar moves once per batch; a long attack would sit at 0/N for minutes, so the
PGD engine reports each iteration through `benchmark.defenses.pgd.iteration_progress`,
shown on the bar as a postfix. A bar's rate counts from its own first work, not from
the job's start (the transform bar does not show the protect stage's rate).
"""

from contextlib import contextmanager

from tqdm.auto import tqdm

from benchmark.defenses.pgd import iteration_progress


def stage_bar(stage: str, total: int, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=f"{stage:<9}", unit="img", leave=True, disable=not enabled,
                dynamic_ncols=True)


def iteration_reporter(bar, images: int):
    """Shows the attack's iteration on the stage's bar (None: no bar)."""
    if bar is None:
        return None

    def report(i: int, iterations: int) -> None:
        bar.set_postfix_str(f"{images} image(s) at iteration {i + 1}/{iterations}",
                            refresh=False)
        bar.refresh()

    return report


@contextmanager
def working(bar: tqdm | None, images: int):
    """Around one component call on `images` images."""
    bar = None if bar is None or bar.disable else bar
    if bar is not None and bar.n == 0:
        bar.start_t = bar._time()
    token = iteration_progress.set(iteration_reporter(bar, images))
    try:
        yield
    finally:
        iteration_progress.reset(token)
        if bar is not None:
            bar.set_postfix_str("")
