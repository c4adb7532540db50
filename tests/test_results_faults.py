"""`bench table|plot|grid` on results that are not what they should be: unfinished jobs, broken
files, filters and metrics that match nothing, an output path that cannot be made, and the
figures' honest drawing of thin or damaged data. Job directories are written by hand."""

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import bench
from PIL import Image

from benchmark.cli import main
from benchmark.errors import BenchError
from benchmark.results import plots
from benchmark.results.tables import make_table
from benchmark.schema import ROW_COLUMNS

READER = "benchmark.results.reading"


def write_job(root, name, *, defense="none", transform="jpeg", values=(0.9, 0.7),
              metric="ssim", pair="fidelity", status="done", params=None, generator="none"):
    """A job directory as `bench run` leaves it: samples, stats (labels), config, status."""
    job = root / name
    job.mkdir(parents=True)
    rows = [{"dataset": "faces", "image_id": f"img{i}", "defense": defense,
             "transform": transform, "generator": generator, "seed": 0, "pair": pair,
             "metric": metric, "value": v, "n": 1} for i, v in enumerate(values)]
    pd.DataFrame(rows, columns=ROW_COLUMNS).to_csv(job / "samples.csv", index=False)
    labels = {"dataset": "faces", "defense": defense, "transform": transform,
              "generator": generator}
    (job / "stats.json").write_text(json.dumps({"directions": {metric: True}, "labels": labels}))
    config = {"_target_": f"benchmark.transforms.{transform.split('(')[0]}", **(params or {})}
    (job / "config.yaml").write_text(json.dumps({"transform": config}))
    if status is not None:
        (job / "status.json").write_text(json.dumps({"status": status}))
    return job


def png(path, seed):
    """Noise, so that the file is long enough for a truncation to cut into its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_images(job, cache, names=("x", "x_adv", "x_t"), n=2):
    """images.csv for the job and its images in the cache (stage folders by image name)."""
    rows = []
    for i in range(n):
        for k, name in enumerate(names):
            key = f"{name}{i:02d}" + "ab" * 8
            rows.append({"image_id": f"img{i}", "image": name, "stage": name, "key": key,
                         "path": "", "generator": ""})
            png(cache / name / key[:2] / f"{key}.png", seed=10 * i + k)
    pd.DataFrame(rows).to_csv(job / "images.csv", index=False)
    return [cache / r["stage"] / r["key"][:2] / f"{r['key']}.png" for r in rows]


def grid_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def cli(capsys, *args):
    """`bench ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, *needles):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def warnings_of(caplog, logger):
    return [r.getMessage() for r in caplog.records
            if r.name == logger and r.levelno == logging.WARNING]


def table_csv(out: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(out), index_col=0)


@pytest.fixture
def sweep(tmp_path):
    """A sweep with one finished job and one of each kind of unfinished one."""
    root = tmp_path / "sweep"
    write_job(root, "0_done", values=(0.9, 0.7))
    write_job(root, "1_killed", defense="noise", values=(0.1,), status="running")
    write_job(root, "2_failed", defense="mist", status="failed")
    write_job(root, "3_unmarked", defense="pg", status=None)
    (write_job(root, "4_garbled", defense="glaze") / "status.json").write_text("{not json")
    (root / "5_crashed").mkdir()  # failed before it wrote any result
    (root / "5_crashed" / "status.json").write_text(json.dumps({"status": "failed"}))
    return root


# -- 1. only finished jobs --------------------------------------------------------------------

def test_only_jobs_whose_status_says_done_are_read_and_the_others_named_once(sweep, capsys,
                                                                            caplog):
    code, out, _ = cli(capsys, "table", str(sweep), "--metric", "ssim", "--pair", "fidelity",
                       "--format", "csv")
    assert code == 0
    table = table_csv(out)
    assert list(table.index) == ["none"]  # the killed job's half-written rows are not averaged in
    assert table.loc["none", "jpeg"] == pytest.approx(0.8)
    (warning,) = warnings_of(caplog, READER)
    for needle in ("1_killed (running)", "2_failed (failed)", "3_unmarked (no status.json",
                   "4_garbled (corrupt status.json)", "5_crashed (failed)"):
        assert needle in warning, warning
    assert "0_done" not in warning


def test_the_warning_reaches_the_user_of_the_command(sweep):
    proc = bench("table", "sweep", "--metric", "ssim", "--pair", "fidelity", cwd=sweep.parent)
    assert "| none" in proc.stdout and "| noise" not in proc.stdout
    assert "left out 5 job(s) that are not done: sweep/1_killed (running)" in proc.stderr


def test_strict_stops_at_an_unfinished_job_in_table_plot_and_grid(sweep, capsys):
    for command in (["table", str(sweep), "--metric", "ssim", "--pair", "fidelity"],
                    ["plot", "curves", str(sweep), "--metric", "ssim", "-o", "x"],
                    ["grid", str(sweep), "-o", "x.png"]):
        code, _, err = cli(capsys, *command, "--strict")
        one_line(code, err, "--strict", "1_killed (running)", "3_unmarked (no status.json")
        assert "unrecognized" not in err


def test_no_finished_job_at_all_is_one_line(tmp_path, capsys):
    write_job(tmp_path, "killed", status="running")
    code, _, err = cli(capsys, "table", str(tmp_path), "--metric", "ssim", "--pair", "fidelity")
    one_line(code, err, "nothing left", "killed (running)")


# -- 2. broken samples.csv and --vs files ------------------------------------------------------

BROKEN = {"empty": b"", "binary": bytes(range(256)) * 4,
          "no columns": b"a,b\n1,2\n",
          "garbage values": b"dataset,image_id,defense,transform,generator,seed,pair,metric,"
                            b"value,n\nfaces,img0,none,jpeg,none,0,fidelity,ssim,0.9x,1\n",
          "unparsable": b'dataset,image_id\n"faces,img0\n'}


@pytest.mark.parametrize("content", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_samples_csv_skips_its_job_with_a_warning(tmp_path, capsys, caplog, content):
    write_job(tmp_path, "good", values=(0.6,))
    bad = write_job(tmp_path, "bad", defense="noise")
    (bad / "samples.csv").write_bytes(content)
    code, out, _ = cli(capsys, "table", str(tmp_path), "--metric", "ssim", "--pair", "fidelity",
                       "--format", "csv")
    assert code == 0 and list(table_csv(out).index) == ["none"]
    (warning,) = warnings_of(caplog, READER)
    assert str(bad / "samples.csv") in warning and "expected" in warning
    code, _, err = cli(capsys, "table", str(tmp_path), "--metric", "ssim", "--pair", "fidelity",
                       "--strict")
    one_line(code, err, str(bad / "samples.csv"), "--strict")


def test_a_job_whose_samples_are_all_broken_is_one_line_from_the_command(workdir):
    (write_job(workdir, "job") / "samples.csv").write_bytes(BROKEN["binary"])
    proc = bench("table", "job", "--metric", "ssim", "--pair", "fidelity", cwd=workdir,
                 check=False)
    one_line(proc.returncode, proc.stderr, "samples.csv", "expected")


VS_HEADER = (b"table,setting,dataset,defense,transform,generator,pair,metric,value,paper_name,"
             b"source\n")
BROKEN_VS = {"empty": b"", "binary": bytes(range(256)) * 4, "no columns": b"a,b\n1,2\n",
             "value not a number": VS_HEADER + b"t,s,faces,none,jpeg,,fidelity,ssim,high,N,p\n"}


@pytest.mark.parametrize("content", BROKEN_VS.values(), ids=BROKEN_VS.keys())
def test_a_garbage_vs_file_is_one_line_naming_it(tmp_path, capsys, content):
    write_job(tmp_path, "job")
    (tmp_path / "paper.csv").write_bytes(content)
    code, _, err = cli(capsys, "table", str(tmp_path / "job"), "--metric", "ssim", "--pair",
                       "fidelity", "--vs", str(tmp_path / "paper.csv"))
    one_line(code, err, str(tmp_path / "paper.csv"), "expected")


# -- 3. several metrics, some without rows -----------------------------------------------------

def frame(metrics: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "faces", "image_id": f"img{i}", "defense": "pg",
                          "transform": "jpeg", "generator": "sd", "seed": 0, "pair": "edit",
                          "metric": m, "value": 0.5 + i / 10, "n": 1}
                         for m in metrics for i in range(2)])


def test_a_metric_without_rows_is_left_out_of_the_table_and_named(caplog):
    text = make_table(frame(["ssim", "lpips"]), "defense", "transform", "ssim,psnr,lpips",
                      "edit", fmt="csv")
    table = pd.read_csv(io.StringIO(text), index_col=0, header=[0, 1])
    assert list(table.columns.get_level_values(0)) == ["ssim", "lpips"]
    (warning,) = warnings_of(caplog, "benchmark.results.tables")
    assert "psnr" in warning and "ssim" not in warning.split(";")[0]
    with pytest.raises(BenchError, match="psnr, fid.*the results hold.*lpips/edit.*ssim/edit"):
        make_table(frame(["ssim", "lpips"]), "defense", "transform", "psnr,fid", "edit")


# -- 4. an output whose folder is a file -------------------------------------------------------

def test_an_output_below_a_file_is_one_line_naming_it(tmp_path, capsys):
    job = str(write_job(tmp_path, "job"))
    write_images(Path(job), tmp_path / "cache")
    (tmp_path / "somefile.txt").write_text("not a folder")
    out = tmp_path / "somefile.txt" / "out.md"
    for command in (["table", job, "--metric", "ssim", "--pair", "fidelity"],
                    ["plot", "cost", job, "--metric", "ssim"],
                    ["grid", job, "--cache-dir", str(tmp_path / "cache")]):
        code, _, err = cli(capsys, *command, "-o", str(out))
        one_line(code, err, str(tmp_path / "somefile.txt"), "not a folder")


# -- 5. --where values that no row has ---------------------------------------------------------

def test_a_where_value_no_row_has_names_the_values_present(tmp_path, capsys):
    for name, transform in (("a", "jpeg"), ("b", "resize")):
        write_images(write_job(tmp_path, name, transform=transform), tmp_path / "cache")
    for command in (["table", str(tmp_path), "--pair", "fidelity", "--metric", "ssim"],
                    ["plot", "curves", str(tmp_path), "--metric", "ssim", "-o", "x"],
                    ["grid", str(tmp_path), "-o", "x.png"]):
        code, _, err = cli(capsys, *command, "--where", "transform=jpeg,nope")
        one_line(code, err, "transform=nope", "jpeg, resize")


# -- 6. figures --------------------------------------------------------------------------------

@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions make, instead of files."""
    figures = []

    def keep(fig, out, formats, name):
        figures.append(fig)
        return [out]

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_a_family_with_one_strength_is_a_labelled_point_not_x_zero(tmp_path, drawn):
    write_job(tmp_path, "r", transform="resize(factor=0.5)", params={"factor": 0.5})
    for q in (90, 30):
        write_job(tmp_path, f"j{q}", transform=f"jpeg(quality={q})", params={"quality": q})
    plots.robustness_curves([tmp_path], "ssim", "fidelity", tmp_path / "c")
    panels = {ax.get_title(): ax for ax in drawn[0].axes if ax.get_title()}
    resize = panels["resize"]
    assert [t.get_text() for t in resize.get_xticklabels()] == ["resize(factor=0.5)"]
    low, high = resize.get_xlim()
    assert high - low >= 1  # not a ±0.04 strength axis around a made-up 0
    assert panels["jpeg"].xaxis_inverted()  # a real strength axis stays one


def test_purifier_quality_bars_start_at_zero(tmp_path, drawn):
    write_job(tmp_path, "a", defense="pg", transform="jpeg", values=(0.93, 0.92))
    write_job(tmp_path, "b", defense="pg", transform="resize", values=(0.87, 0.88))
    plots.purifier_cost([tmp_path], "ssim", tmp_path / "c")
    quality, cost = drawn[0].axes
    assert quality.get_xlim()[0] == 0
    assert quality.get_xlim()[1] > 0.93
    assert len(cost.get_xticks()) == 0  # no time was measured: no seconds axis to read


def test_the_grid_of_a_job_without_a_generator_draws_only_what_it_made(tmp_path, drawn):
    write_images(write_job(tmp_path, "job", defense="pg"), tmp_path / "cache")
    plots.qualitative_grid([tmp_path / "job"], tmp_path / "g.png", n=2,
                           cache_dir=str(tmp_path / "cache"))
    fig = drawn[0]
    assert len(fig.axes) == 2 * 3  # two images x (clean, protected, transformed)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["clean", "protected", "transformed"]
    assert not any("not made" in t for t in grid_texts(fig))


def test_the_grid_says_which_images_were_removed_from_the_cache(tmp_path, drawn):
    files = write_images(write_job(tmp_path, "job", defense="pg"), tmp_path / "cache")
    files[2].unlink()
    plots.qualitative_grid([tmp_path / "job"], tmp_path / "g.png", n=2,
                           cache_dir=str(tmp_path / "cache"))
    assert grid_texts(drawn[0]) == ["removed from\nthe cache"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "replaced"])
def test_a_damaged_cached_image_is_drawn_as_unreadable_and_named(tmp_path, drawn, caplog,
                                                                 capsys, damage):
    files = write_images(write_job(tmp_path, "job", defense="pg"), tmp_path / "cache")
    data = files[1].read_bytes()
    sidecar = {"payload": {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    files[1].with_suffix(".json").write_text(json.dumps(sidecar))  # as the cache records it
    if damage == "replaced":  # another image that decodes: only the checksum tells
        png(files[1], seed=99)
    else:
        files[1].write_bytes(b"\x00garbage" * 20 if damage == "garbage"
                             else data[: len(data) // 2])
    plots.qualitative_grid([tmp_path / "job"], tmp_path / "g.png", n=2,
                           cache_dir=str(tmp_path / "cache"))
    assert grid_texts(drawn[0]) == ["unreadable\nin the cache"]
    (warning,) = warnings_of(caplog, READER)
    assert str(files[1]) in warning
    code, _, err = cli(capsys, "grid", str(tmp_path / "job"), "--cache-dir",
                       str(tmp_path / "cache"), "-o", str(tmp_path / "g.png"), "--strict")
    one_line(code, err, str(files[1]), "--strict")


def test_the_grid_command_is_one_line_on_a_broken_images_csv(workdir):
    job = write_job(workdir, "job")
    (job / "images.csv").write_bytes(BROKEN["binary"])
    proc = bench("grid", "job", "-o", "g.png", cwd=workdir, check=False)
    one_line(proc.returncode, proc.stderr, "images.csv", "expected")
