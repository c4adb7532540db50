"""The defense configs: published defaults (the design's table), composition, validation, listing.

The design document's "Reference defaults of the defenses" table is the source
of truth. Its rows for the defenses of this package are kept below; where the
design document is reachable (../shared/design.md beside the repository, or
BENCH_DESIGN), the test first checks that these rows are still the design's.
Each row is then parsed (numbers, "[-1,1]" units converted: x 127.5) and
compared with the YAML defaults.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import bench
from hydra import compose, initialize_config_dir
from PIL import Image

from benchmark.build import build
from benchmark.data.patterns import default_pattern, make_pattern
from benchmark.errors import ConfigValueError
from benchmark.paths import config_dir

DESIGN_ROWS = """
| PhotoGuard encoder (img2img) | SD v1.5 VAE encoder | 7.65 (0.06 in [-1,1]) | 0.02 in [-1,1], decaying | 1000 | minimise ‖E(x_adv) − z_target‖ (img2img demo: z_target = 0; inpainting demo: E(target image)) | 512 |
| PhotoGuard diffusion | SD inpainting, backprop through 4 denoising steps | 16 in [-1,1] L2, or L∞ 12.75 (0.1) | L∞ 0.006 | 200, 10 grad reps | ‖pipe(x_adv) − target‖ | 512 |
| AdvDM | SD v1.4/1.5 | 16 | 1 | 100 | maximise the denoising loss, t ~ U | 512 |
| Mist v1 | SD v1.4 | 16 | 1 | 100 | textural ‖E(x_adv) − E(pattern)‖ − w·semantic (w = 1e4 fused mode) | 512 |
| SDS(+) / SDS(−) / SDST | SD v1.4 | 16 | 1 | 100 | score-distillation gradient through the encoder only; ± sign; SDST adds a texture target | 512 |
| DiffusionGuard | SD inpainting | 8 | 0.5 | 800 | −‖ε̂ at the first step‖, shrunk face mask | 512 |
| EditShield | InstructPix2Pix | none enforced (Adam lr 1e-3) | | 30 | −MSE(VAE emb) + 0.1·MSE(x, x0), EOT crop/blur/rotate | 512 |
| FaceLock | InstructPix2Pix | 3.8 (0.03 in [-1,1]) | 0.01, decaying | 100 | −cos(face-ID) + 0.2·latent MSE + LPIPS | native |
"""
PM1 = 127.5  # one unit of [-1, 1] in pixel units out of 255
DEFENSES = ["photoguard_encoder", "photoguard_encoder_inpaint", "photoguard_diffusion",
            "photoguard_diffusion_linf", "advdm", "mist", "sds", "sds_plus", "sdst",
            "diffusionguard", "editshield", "facelock"]


def design_path() -> Path:
    return Path(os.environ.get("BENCH_DESIGN",
                               Path(__file__).resolve().parents[2] / "shared" / "design.md"))


def parse(rows: str) -> dict[str, list[str]]:
    table = {}
    for line in rows.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        table[cells[0]] = cells
    return table


def numbers(cell: str) -> list[float]:
    """The numbers of a cell, in order (not those of names such as L2 or [-1,1])."""
    return [float(n) for n in re.findall(r"(?<![A-Za-z\d.])\d+(?:\.\d+)?(?:e-?\d+)?",
                                         cell.replace("[-1,1]", ""))]


def in_pm1(cell: str) -> list[float]:
    """Values written in [-1, 1] units, converted to pixel units out of 255."""
    return [float(n) * PM1 for n in re.findall(r"(\d+(?:\.\d+)?)\)? in \[-1,1\]", cell)]


def defaults(name: str) -> dict:
    """The defense's YAML, with the group file it extends (`defaults: [sds, _self_]`) merged."""
    data = yaml.safe_load((config_dir() / "defense" / f"{name}.yaml").read_text())
    merged = {}
    for parent in data.pop("defaults", []):
        if parent != "_self_":
            merged.update(defaults(parent))
    merged.update(data)
    return merged


@pytest.fixture(scope="module")
def table():
    return parse(DESIGN_ROWS)


def test_the_kept_rows_are_the_designs():
    path = design_path()
    if not path.is_file():
        pytest.skip(f"design document not found at {path} (set BENCH_DESIGN)")
    design = {}
    for line in path.read_text().splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            design[cells[0]] = cells
    for method, cells in parse(DESIGN_ROWS).items():
        assert design.get(method) == cells, f"the design's row for {method} changed"


def test_photoguard_encoder_defaults(table):
    _, _, eps, step, iterations, objective, _ = table["PhotoGuard encoder (img2img)"]
    cfg = defaults("photoguard_encoder")
    assert cfg["eps"] == numbers(eps)[0] == pytest.approx(in_pm1(eps)[0])
    assert cfg["step"] == pytest.approx(in_pm1(step)[0])
    assert "decaying" in step and cfg["schedule"] == "linear"
    assert cfg["iterations"] == numbers(iterations)[0]
    assert "z_target = 0" in objective and cfg["target"] == "zero"
    inpaint = defaults("photoguard_encoder_inpaint")
    assert "E(target image)" in objective and inpaint["target"] == "image"
    assert inpaint["eps"] == cfg["eps"] and inpaint["iterations"] == cfg["iterations"]
    assert inpaint["variant"] == "inpaint" and inpaint["mask"]["region"] == "background"


def test_photoguard_diffusion_defaults(table):
    _, target, eps, step, iterations, _, _ = table["PhotoGuard diffusion"]
    l2, linf = defaults("photoguard_diffusion"), defaults("photoguard_diffusion_linf")
    assert l2["norm"] == "l2" and "L2" in eps
    assert l2["eps"] == pytest.approx(in_pm1(eps)[0])  # 16 in [-1, 1] -> 2040
    assert linf["norm"] == "linf" and linf["eps"] == numbers(eps)[1] == pytest.approx(
        numbers(eps)[2] * PM1)
    assert linf["step"] == pytest.approx(numbers(step)[0] * PM1)  # 0.006 in [-1, 1]
    assert l2["iterations"] == linf["iterations"] == numbers(iterations)[0]
    assert l2["grad_samples"] == numbers(iterations)[1]
    assert l2["steps"] == numbers(target)[0] and "inpainting" in l2["model"]


@pytest.mark.parametrize("method, names", [
    ("AdvDM", ["advdm"]), ("Mist v1", ["mist"]),
    ("SDS(+) / SDS(−) / SDST", ["sds", "sds_plus", "sdst"]),
    ("DiffusionGuard", ["diffusionguard"]),
])
def test_linf_budgets_steps_and_iterations(table, method, names):
    _, _, eps, step, iterations, _, _ = table[method]
    for name in names:
        cfg = defaults(name)
        assert (cfg["eps"], cfg["step"], cfg["iterations"]) == (
            numbers(eps)[0], numbers(step)[0], numbers(iterations)[0]), name


def test_mist_sds_and_diffusionguard_objectives(table):
    objective = table["Mist v1"][5]
    mist = defaults("mist")
    assert mist["mode"] == "fused" and "fused" in objective
    assert mist["weight"] == numbers(objective.split("w =")[1])[0]  # 1e4
    assert (defaults("sds")["direction"], defaults("sds_plus")["direction"]) == ("-", "+")
    assert defaults("sdst")["textural"] is True and not defaults("sds")["textural"]
    assert "inpainting" in defaults("diffusionguard")["model"]
    assert defaults("diffusionguard")["mask_augmentation"] == "contour_shrink"


def test_editshield_defaults(table):
    _, target, eps, _, iterations, objective, _ = table["EditShield"]
    cfg = defaults("editshield")
    assert "none enforced" in eps and cfg["eps"] is None
    assert cfg["lr"] == numbers(eps)[0]  # Adam lr 1e-3
    assert cfg["iterations"] == numbers(iterations)[0]
    assert cfg["beta"] == numbers(objective.split("+")[1])[0]  # 0.1 MSE(x, x0)
    kinds = " ".join(e["_target_"] for e in cfg["eot"]).lower()
    assert all(k in kinds for k in ("crop", "blur", "rotate")) and "crop/blur/rotate" in objective
    assert "instruct-pix2pix" in cfg["model"] and "InstructPix2Pix" in target


def test_facelock_defaults(table):
    _, target, eps, step, iterations, objective, _ = table["FaceLock"]
    cfg = defaults("facelock")
    assert cfg["eps"] == pytest.approx(in_pm1(eps)[0])  # 0.03 in [-1, 1] -> 3.825
    assert abs(cfg["eps"] - numbers(eps)[0]) < 0.05  # the table rounds it to 3.8
    assert cfg["step"] == pytest.approx(numbers(step)[0] * PM1)  # 0.01 in [-1, 1], as the code
    assert "decaying" in step and cfg["schedule"] == "linear"
    assert cfg["iterations"] == numbers(iterations)[0]
    assert cfg["latent_weight"] == numbers(objective.split("+")[1])[0]  # 0.2 latent MSE
    assert "LPIPS" in objective and cfg["lpips_net"] == "vgg"
    assert "instruct-pix2pix" in cfg["model"] and "InstructPix2Pix" in target


# -- composition, validation, listing -------------------------------------------------------------


def compose_tiny(defense: str, *overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=["experiment=tiny", f"defense={defense}", "device=cpu",
                                             *overrides])


@pytest.mark.parametrize("name", DEFENSES)
def test_every_defense_builds_at_the_tiny_scale(name):
    cfg = compose_tiny(name)
    defense = build(cfg.defense, "defense")
    assert callable(defense.protect)
    model = cfg.defense.get("model") or cfg.defense.encoder.model
    assert model.startswith("tiny/"), "the tiny scale must not need real weights"
    assert cfg.defense.iterations <= 10


@pytest.mark.parametrize("name, override", [
    ("advdm", "defense.eps=-1"), ("mist", "defense.mode=stylish"),
    ("sds", "defense.direction=up"), ("photoguard_diffusion", "defense.norm=l1"),
    ("diffusionguard", "defense.contour_rounds=1"), ("editshield", "defense.lr=0"),
    ("facelock", "defense.identity_from=2"), ("photoguard_encoder_inpaint",
                                              "defense.mask.region=hair"),
])
def test_bad_values_stop_the_build(name, override):
    with pytest.raises(ConfigValueError):
        build(compose_tiny(name, override).defense, "defense")


def test_bench_ls_lists_every_defense_with_its_budget(tmp_path):
    out = bench("ls", "defense", cwd=tmp_path).stdout
    for name in DEFENSES:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert re.search(r"eps \d|no budget", line), line


def test_the_shipped_pattern_is_the_generators_output():
    shipped = np.asarray(Image.open(default_pattern()).convert("RGB"))
    assert shipped.shape == (512, 512, 3)
    assert np.array_equal(shipped, make_pattern())
    assert shipped.std() > 60  # high contrast: a texture, not a flat image
