"""`bench table`: paper layouts, best in bold, arrows, mean/std/ci/worst, drop, --vs."""

import io

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, bench

from benchmark.errors import BenchError
from benchmark.paths import config_dir
from benchmark.results.paper import compare_reported
from benchmark.results.tables import bootstrap_ci, make_table

REPO = config_dir().parent


def frame(values: dict, pair: str = "edit", generator: str = "sd") -> pd.DataFrame:
    """{(defense, transform, metric): [per-image values]} -> samples rows."""
    rows = []
    for (defense, transform, metric), vals in values.items():
        for i, v in enumerate(vals):
            rows.append({"dataset": "faces", "image_id": f"img{i}", "defense": defense,
                         "transform": transform, "generator": generator, "seed": 0,
                         "pair": pair, "metric": metric, "value": v, "n": 1})
    return pd.DataFrame(rows)


SAMPLES = frame({
    ("photoguard", "identity", "ssim"): [0.50, 0.60, 0.70],
    ("photoguard", "jpeg", "ssim"): [0.90, 0.70, 0.80],
    ("photoguard", "resize", "ssim"): [0.60, 0.95, 0.70],
    ("mist", "identity", "ssim"): [0.40, 0.50, 0.60],
    ("mist", "jpeg", "ssim"): [0.80, 0.60, 0.70],
    ("mist", "resize", "ssim"): [0.85, 0.55, 0.65],
    ("photoguard", "identity", "lpips"): [0.40, 0.30, 0.20],
    ("photoguard", "jpeg", "lpips"): [0.10, 0.20, 0.15],
    ("photoguard", "resize", "lpips"): [0.25, 0.05, 0.20],
    ("mist", "identity", "lpips"): [0.50, 0.40, 0.30],
    ("mist", "jpeg", "lpips"): [0.20, 0.30, 0.25],
    ("mist", "resize", "lpips"): [0.10, 0.35, 0.30],
})
DIRECTIONS = {"ssim": True, "lpips": False}


def csv_table(text: str, header=0) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), index_col=0, header=header)


def test_defense_rows_by_transform_columns_with_means():
    t = csv_table(make_table(SAMPLES, "defense", "transform", "ssim", "edit", fmt="csv"))
    assert list(t.index) == ["photoguard", "mist"]
    assert list(t.columns) == ["identity", "jpeg", "resize"]
    assert t.loc["mist", "resize"] == pytest.approx(np.mean([0.85, 0.55, 0.65]), abs=1e-4)
    flipped = csv_table(make_table(SAMPLES, "transform", "defense", "ssim", "edit", fmt="csv"))
    assert flipped.loc["resize", "mist"] == t.loc["mist", "resize"]


def test_best_value_in_bold_follows_the_metric_direction():
    md = make_table(SAMPLES, "defense", "transform", "ssim,lpips", "edit", fmt="md",
                    directions=DIRECTIONS)
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in md.splitlines() if line.startswith(("| photoguard", "| mist"))}
    header = [c.strip() for c in md.splitlines()[2].split("|")[2:-1]]
    assert header[0] == "ssim ↑ · identity" and header[3] == "lpips ↓ · identity"
    # ssim (higher is better): photoguard wins identity (0.60 vs 0.50); lpips (lower is
    # better): photoguard wins identity too (0.30 vs 0.40) and jpeg (0.15 vs 0.25)
    assert lines["photoguard"][0] == "**0.6000**" and lines["mist"][0] == "0.5000"
    assert lines["photoguard"][3] == "**0.3000**" and lines["mist"][3] == "0.4000"
    assert lines["photoguard"][4] == "**0.1500**"
    assert "↑" in md.splitlines()[0] and "↓" in md.splitlines()[0]


def test_unknown_direction_gets_no_arrow_and_no_bold():
    md = make_table(SAMPLES, "defense", "transform", "ssim", "edit", fmt="md", directions={})
    assert "**" not in md and "↑" not in md


def test_several_metrics_make_a_two_level_header():
    text = make_table(SAMPLES, "defense", "transform", ["ssim", "lpips"], "edit", fmt="csv",
                      directions=DIRECTIONS)
    t = csv_table(text, header=[0, 1])
    assert list(t.columns.get_level_values(0)) == ["ssim"] * 3 + ["lpips"] * 3
    assert t.loc["mist", ("lpips", "jpeg")] == pytest.approx(0.25, abs=1e-4)
    latex = make_table(SAMPLES, "defense", "transform", ["ssim", "lpips"], "edit", fmt="latex",
                       directions=DIRECTIONS)
    assert "\\multicolumn{3}{c}{ssim $\\uparrow$}" in latex
    assert "\\multicolumn{3}{c}{lpips $\\downarrow$}" in latex
    assert "\\cmidrule(lr){2-4} \\cmidrule(lr){5-7}" in latex
    assert "\\textbf{0.6000}" in latex and latex.count("\\\\") == 4  # 2 header rows + 2 body
    assert "\\toprule" in latex and "\\bottomrule" in latex


def test_std_and_seeded_bootstrap_ci():
    std = make_table(SAMPLES, "defense", "transform", "ssim", "edit", "std", "csv")
    cell = csv_table(std).loc["mist", "jpeg"]
    assert cell == f"0.7000 ± {np.std([0.8, 0.6, 0.7], ddof=1):.4f}"
    a = make_table(SAMPLES, "defense", "transform", "ssim", "edit", "ci", "csv", seed=3)
    mean, interval = csv_table(a).loc["mist", "jpeg"].split(" ", 1)
    low, high = map(float, interval.strip("[]").split(", "))
    assert low < float(mean) < high and 0.6 <= low and high <= 0.8
    many = frame({("pg", "jpeg", "ssim"): list(np.random.default_rng(0).uniform(0, 1, 30))})
    b = make_table(many, "defense", "transform", "ssim", "edit", "ci", "csv", seed=3)
    c = make_table(many, "defense", "transform", "ssim", "edit", "ci", "csv", seed=3)
    d = make_table(many, "defense", "transform", "ssim", "edit", "ci", "csv", seed=4)
    assert b == c and b != d  # seeded: reproducible, and the seed is what changes it


def test_bootstrap_interval_matches_the_t_interval_on_a_large_sample():
    values = np.random.default_rng(0).normal(5.0, 2.0, size=400)
    low, high = bootstrap_ci(values, seed=1)
    half = 1.966 * values.std(ddof=1) / np.sqrt(len(values))
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.05)


def test_worst_case_is_per_image_over_the_columns():
    t = csv_table(make_table(SAMPLES, "defense", "transform", "ssim", "edit", "worst", "csv",
                             directions=DIRECTIONS))
    # ssim on the edit pair: the editor's best (highest) transform for each image
    assert t.loc["photoguard", "worst case"] == pytest.approx(np.mean([0.90, 0.95, 0.80]),
                                                              abs=1e-4)
    assert t.loc["photoguard", "worst case"] > t.loc["photoguard"].drop("worst case").astype(
        float).max()
    lp = csv_table(make_table(SAMPLES, "defense", "transform", "lpips", "edit", "worst", "csv",
                              directions=DIRECTIONS))
    assert lp.loc["mist", "worst case"] == pytest.approx(np.mean([0.10, 0.30, 0.25]), abs=1e-4)
    subset = csv_table(make_table(SAMPLES, "defense", "transform", "ssim", "edit", "worst",
                                  "csv", directions=DIRECTIONS,
                                  where={"transform": ["identity", "jpeg"]}))
    assert subset.loc["photoguard", "worst case"] == pytest.approx(np.mean([0.9, 0.7, 0.8]),
                                                                   abs=1e-4)
    transformed = csv_table(make_table(SAMPLES, "defense", "transform", "ssim", "edit", "worst",
                                       "csv", directions=DIRECTIONS,
                                       where={"transform!": ["identity"]}))
    assert list(transformed.columns) == ["jpeg", "resize", "worst case"]
    assert transformed.loc["mist", "worst case"] == pytest.approx(np.mean([0.85, 0.6, 0.7]),
                                                                  abs=1e-4)
    with pytest.raises(BenchError, match="direction"):
        make_table(SAMPLES, "defense", "transform", "ssim", "edit", "worst", "csv", directions={})


def test_drop_is_protection_minus_edit_per_image():
    edit = frame({("pg", "jpeg", "ssim"): [0.9, 0.8], ("pg", "resize", "ssim"): [0.7, 0.6]})
    protection = frame({("pg", "jpeg", "ssim"): [0.5, 0.4], ("pg", "resize", "ssim"): [0.5, 0.4]},
                       pair="protection")
    t = csv_table(make_table(pd.concat([edit, protection]), "defense", "transform", "ssim",
                             "drop", fmt="csv"))
    assert t.loc["pg", "jpeg"] == pytest.approx(-0.4) and t.loc["pg", "resize"] == pytest.approx(
        -0.2)
    md = make_table(pd.concat([edit, protection]), "defense", "transform", "ssim", "drop")
    assert "protection − edit" in md


def test_mixed_generators_must_be_chosen():
    both = pd.concat([SAMPLES, frame({("mist", "jpeg", "ssim"): [0.1]}, generator="ip2p")])
    with pytest.raises(BenchError, match="--where generator="):
        make_table(both, "defense", "transform", "ssim", "edit")
    t = csv_table(make_table(both, "defense", "transform", "ssim", "edit", fmt="csv",
                             where={"generator": ["ip2p"]}))
    assert t.loc["mist", "jpeg"] == pytest.approx(0.1)


def test_our_numbers_beside_the_studys(tmp_path):
    reported = tmp_path / "reported.csv"
    reported.write_text(
        "table,setting,dataset,defense,transform,generator,pair,metric,value,paper_name,source\n"
        "t1,purification,faces,mist,jpeg,,edit,ssim,0.6500,Mist,paper\n"
        "t1,purification,faces,advdm,jpeg,,edit,ssim,0.7000,AdvDM,paper\n"
        "t1,purification,faces,mist(eps=4),jpeg,,edit,ssim,0.7,Mist small,paper\n"
        "t1,purification,faces,no_such_defense,jpeg,,edit,ssim,0.7,Future,paper\n"
        "t1,purification,faces,mist,jpeg,no_such_gan,edit,ssim,0.7,Mist on a GAN,paper\n"
        "t2,portraits,faces,*,jpeg,,edit,ssim,0.7200,(all),paper\n"
        "t3,other pair,faces,mist,jpeg,,fidelity,ssim,0.9,Mist,paper\n")
    out = pd.read_csv(io.StringIO(compare_reported(SAMPLES, reported, "ssim", "edit", "csv")))
    mist = out[out["defense"] == "Mist"].iloc[0]
    assert float(mist["ours"]) == pytest.approx(0.7) and mist["paper"] == 0.65
    assert float(mist["ours − paper"]) == pytest.approx(0.05, abs=1e-4)
    assert out[out["defense"] == "AdvDM"]["ours (label)"].item() == "not run"
    # a reported setting with parameters matches only our job with those parameters
    assert out[out["defense"] == "Mist small"]["ours (label)"].item() == "not run"
    # a setting whose defense or generator has no config file yet is not built, not just not run
    assert out[out["defense"] == "Future"]["ours (label)"].item() == \
        "not built (defense/no_such_defense.yaml)"
    assert out[out["defense"] == "Mist on a GAN"]["ours (label)"].item() == \
        "not built (generator/no_such_gan.yaml)"
    pooled = out[out["defense"] == "(all)"].iloc[0]  # every defense's images together
    assert float(pooled["ours"]) == pytest.approx(np.mean([0.9, 0.7, 0.8, 0.8, 0.6, 0.7]))
    assert len(out) == 6  # the fidelity row belongs to another pair
    with pytest.raises(BenchError, match="reports nothing"):
        compare_reported(SAMPLES, reported, "lpips", "edit")


def test_the_reported_numbers_name_the_paper_and_a_setting_bench_can_run():
    """Structure of results/paper_reported.csv (its values are checked by no copy of them):
    each row names the paper, is on bench's 0-1 SSIM scale (with the percentage the paper
    prints, where the source gives one, equal to 100 x the value), and names its purifier,
    pair and generator the way `bench table --vs` matches them."""
    import re

    paper = pd.read_csv(REPO / "results" / "paper_reported.csv", dtype=str,
                        keep_default_na=False)
    assert list(paper.columns) == ["table", "setting", "dataset", "defense", "transform",
                                   "generator", "pair", "metric", "value", "paper_name",
                                   "source"]
    assert len(paper) >= 9
    for row in paper.itertuples():
        assert "arXiv 2604.23688" in row.source and "Sun et al. 2026" in row.source, row
        assert row.table and row.setting and row.paper_name, row
        value = float(row.value)
        assert row.metric == "ssim" and 0 < value <= 1, row
        percent = re.search(r"(\d{2}\.\d{2})(?: as a percentage|, a percentage|[),])",
                            row.source)
        assert percent, row  # every value states the paper's percentage it was read from
        assert float(percent.group(1)) == pytest.approx(100 * value, abs=1e-9), row
        # the study purifies with TIP-RSR: its rows compare transform=tip_rsr
        assert row.transform == "tip_rsr", row
        assert row.pair in ("fidelity", "edit"), row
        assert bool(row.generator) == (row.pair == "edit"), row  # an edit names its editor
        assert row.defense == "*" or re.fullmatch(r"[a-z0-9_]+(\(.+=.+\))?", row.defense), row
    assert "advdm_minus" in set(paper["defense"])  # AdvDM(-): a config of its own


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    env_cache = root / "cache"
    import os

    old = os.environ.get("BENCH_CACHE")
    os.environ["BENCH_CACHE"] = str(env_cache)
    try:
        bench("run", "-m", "defense=none,noise", "transform=identity,jpeg", *TINY,
              "metric=[psnr,ssim]", "pairs=[fidelity,edit,protection]", "hydra.sweep.dir=sweep",
              cwd=root)
    finally:
        if old is None:
            os.environ.pop("BENCH_CACHE")
        else:
            os.environ["BENCH_CACHE"] = old
    return root


def table_in_process(*args, cwd, capsys, monkeypatch) -> str:
    """`bench table ...` without a new interpreter (the subprocess path is tested below)."""
    from benchmark.cli import main

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    main(["table", *args])
    return capsys.readouterr().out


def test_cli_tables_from_a_sweep(sweep, capsys, monkeypatch):
    def table(*args):
        return table_in_process(*args, cwd=sweep, capsys=capsys, monkeypatch=monkeypatch)

    md = table("sweep", "--metric", "ssim,psnr", "--pair", "fidelity", "--agg", "ci")
    assert "ssim ↑ · identity" in md and "psnr ↑ · jpeg" in md and "**" in md
    assert "95% bootstrap CI" in md
    worst = table("sweep", "--metric", "ssim", "--pair", "edit", "--agg", "worst", "--format",
                  "csv")
    t = csv_table(worst)
    assert t.loc["none", "worst case"] == pytest.approx(1.0)  # identity: the clean image itself
    drop = table("sweep", "--metric", "ssim", "--pair", "drop", "--format", "csv")
    d = csv_table(drop)
    assert d.loc["none", "identity"] == pytest.approx(0.0)
    assert d.loc["noise", "jpeg"] != 0
    out = bench("table", "sweep", "--metric", "ssim", "--pair", "fidelity", "--format", "latex",
                "-o", "tables/ssim.tex", cwd=sweep).stdout
    assert "wrote" in out and "\\begin{tabular}" in (sweep / "tables" / "ssim.tex").read_text()
    bad = bench("table", "sweep", "--metric", "ssim", "--pair", "fidelity", "--agg", "median",
                cwd=sweep, check=False)
    assert bad.returncode == 2 and "--agg median" in bad.stderr


def test_cli_vs_reported(sweep, capsys, monkeypatch):
    (sweep / "reported.csv").write_text(
        "table,setting,dataset,defense,transform,generator,pair,metric,value,paper_name,source\n"
        "t,jpeg purification,portraits,noise,jpeg,,fidelity,ssim,0.8080,Noise,paper\n")
    out = table_in_process("sweep", "--metric", "ssim", "--pair", "fidelity", "--vs",
                           "reported.csv", "--format", "csv", cwd=sweep, capsys=capsys,
                           monkeypatch=monkeypatch)
    row = pd.read_csv(io.StringIO(out)).iloc[0]
    summary = pd.concat([pd.read_csv(p) for p in (sweep / "sweep").rglob("summary.csv")],
                        ignore_index=True)
    ours = summary[(summary["defense"] == "noise") & (summary["transform"] == "jpeg")
                   & (summary["metric"] == "ssim") & (summary["pair"] == "fidelity")]
    ours = ours["mean"].item()
    assert float(row["ours"]) == pytest.approx(ours, abs=1e-4)
    assert float(row["ours − paper"]) == pytest.approx(ours - 0.8080, abs=1e-4)
    real = table_in_process("sweep", "--metric", "ssim", "--pair", "fidelity", "--vs",
                            str(REPO / "results" / "paper_reported.csv"), cwd=sweep,
                            capsys=capsys, monkeypatch=monkeypatch)
    assert "PhotoGuard" in real and "0.8080" in real and "not run" in real
