"""Per-image inpainting masks given with the dataset (dataset.masks, generator.mask=dataset).

Alignment with the image's crop, the runner's plumbing (each image gets its own mask,
the mask is part of the generate stage's cache key and of the job key), and the
errors for missing masks. The inpainting model is the tiny random one (64 px): it
does not keep the unmasked region (its weights are random), so the tests compare
edits made with different masks and with the same mask given through mask=file.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import bench
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from benchmark.data.folder import FolderDataset
from benchmark.data.portraits import PortraitsDataset
from benchmark.errors import BenchError, ConfigValueError
from benchmark.generators.sd_inpaint import SDInpaint
from benchmark.images import content_key, to_pil
from benchmark.paths import config_dir
from benchmark.runner import Job

SEEDS = [11, 22]
W, H = 80, 64  # non-square sources: the folder dataset centre-crops x in [8, 72)


def _grey(array: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _columns(left: int, right: int, width: int = W, height: int = H) -> np.ndarray:
    m = np.zeros((height, width), np.uint8)
    m[:, left:right] = 255
    return m


@pytest.fixture
def folder(tmp_path, portraits64):
    """Two 80x64 portraits in imgs/, and masks/ with the left (a) or right (b) half of the crop."""
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir()
    for name, x in zip("ab", portraits64[:2]):
        to_pil(x).resize((W, H)).save(imgs / f"{name}.png")
    _grey(_columns(8, 40), masks / "a.png")   # after the crop: columns [0, 32) of 64
    _grey(_columns(40, 72), masks / "b.png")  # columns [32, 64)
    return imgs, masks


def _compose(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


# -- the dataset: alignment and errors --------------------------------------------------------------


def test_mask_gets_the_crop_and_resize_of_its_image(tmp_path):
    """A marked square off the centre of a non-square image lands where the mask's square does."""
    rng = np.random.default_rng(0)
    marked = np.zeros((H, W), np.uint8)
    marked[12:30, 50:66] = 255  # right of the centre, inside the crop [8, 72)
    rgb = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
    rgb[..., 0] = marked  # the red channel is the mark
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "imgs" / "sub" / "p.png")
    _grey(marked, tmp_path / "masks" / "sub" / "p.BMP")  # any image extension, any case

    d = FolderDataset(str(tmp_path / "imgs"), resolution=40, masks=str(tmp_path / "masks"))
    sample = d.load(0, with_mask=True)
    assert sample.mask.shape == (1, 40, 40) and set(sample.mask.unique().tolist()) == {0.0, 1.0}
    # Pillow resizes each channel with the same filter: the red channel is the resized mark
    assert torch.equal(sample.mask[0], (sample.x[0] >= 0.5).float())
    # and where the crop puts it: centre at row 21, column 58 - 8 = 50 of the 64 px crop
    rows, cols = torch.nonzero(sample.mask[0], as_tuple=True)
    scale = 64 / 40
    assert abs((rows.float().mean() + 0.5) * scale - 21) < 0.5
    assert abs((cols.float().mean() + 0.5) * scale - 50) < 0.5
    assert d.load(0).mask is None  # only when asked for


def test_portrait_masks_follow_the_face_crop(tmp_path):
    """Each photo's own luma, thresholded, as its mask: after the face crop it matches the image."""
    plain = PortraitsDataset(resolution=64, limit=3)
    for path in plain.paths:
        luma = np.asarray(Image.open(path).convert("RGB").convert("L"))
        _grey(np.where(luma >= 128, 255, 0), tmp_path / f"{path.stem}.png")
    d = PortraitsDataset(resolution=64, limit=3, masks=str(tmp_path))
    for i in range(3):
        sample = d.load(i, with_mask=True)
        luma = 0.299 * sample.x[0] + 0.587 * sample.x[1] + 0.114 * sample.x[2]
        agree = (sample.mask[0] == (luma >= 0.5).float()).float().mean()
        shifted = (sample.mask[0].roll(6, dims=1) == (luma >= 0.5).float()).float().mean()
        assert agree > 0.95 and agree > shifted + 0.03, (sample.image_id, agree, shifted)


def test_missing_and_ambiguous_masks_name_the_image_and_the_paths_tried(folder):
    imgs, masks = folder
    (masks / "b.png").unlink()
    d = FolderDataset(str(imgs), resolution=64, masks=str(masks))
    with pytest.raises(BenchError) as e:
        d.check_masks()
    assert str(imgs / "b.png") in str(e.value) and str(masks / "b") + ".{png,jpg" in str(e.value)
    assert str(imgs / "a.png") not in str(e.value)
    with pytest.raises(BenchError, match="no mask for image"):
        d.load(1, with_mask=True)
    _grey(_columns(0, 10), masks / "a.jpg")
    with pytest.raises(BenchError, match="several masks for image .*a.png"):
        FolderDataset(str(imgs), resolution=64, masks=str(masks)).load(0, with_mask=True)


def test_mask_of_another_size_is_refused(folder):
    imgs, masks = folder
    _grey(_columns(0, 10, width=64), masks / "a.png")
    d = FolderDataset(str(imgs), resolution=64, masks=str(masks))
    with pytest.raises(BenchError, match="64x64 pixels but its image .*a.png is 80x64"):
        d.load(0, with_mask=True)


def test_masks_must_be_an_existing_folder(tmp_path):
    with pytest.raises(ConfigValueError) as e:
        PortraitsDataset(resolution=64, masks=str(tmp_path / "nope"))
    assert e.value.key == "masks"


# -- the generator ------------------------------------------------------------------------------------


def test_each_image_is_edited_with_its_own_mask(tmp_path, portraits64):
    _grey(_columns(0, 32, 64, 64), tmp_path / "left.png")
    gen = SDInpaint(model="tiny/sd-inpaint", resolution=64, steps=2, device="cpu", mask="dataset")
    assert gen.needs_masks and not SDInpaint(model="tiny/sd-inpaint", device="cpu").needs_masks
    x = portraits64[:1].expand(2, 3, 64, 64)  # one image twice, the same seed
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    y = gen.edit(x, [SEEDS[0]] * 2, masks=torch.cat([left, 1 - left]))
    assert (y[0] - y[1]).abs().mean() > 1e-3  # two masks, two edits
    by_file = SDInpaint(model="tiny/sd-inpaint", resolution=64, steps=2, device="cpu",
                        mask="file", mask_file=str(tmp_path / "left.png"))
    # the same mask through mask=file: the same edit (up to the batch's float rounding)
    assert (by_file.edit(x[:1], SEEDS[:1]) - y[:1]).abs().max() < 1e-5
    small = torch.nn.functional.interpolate(left, size=(32, 32), mode="nearest")
    half = gen.edit(x[:1], SEEDS[:1], masks=small)  # masks are fit to the input's size
    assert (half - y[:1]).abs().max() < 1e-5
    with pytest.raises(BenchError, match="dataset.masks"):
        gen.edit(x, SEEDS)


# -- the runner ---------------------------------------------------------------------------------------


def _job(tmp_path, imgs, generator: list[str], masks=None, pairs="[protection]"):
    cfg = _compose(["experiment=tiny", "dataset=folder", f"dataset.root={imgs}",
                    "dataset.limit=null", "generator=sd_inpaint", "generator.steps=2", *generator, "defense=none",
                    "transform=identity", "metric=[psnr]", f"pairs={pairs}", "progress=false",
                    "device=cpu", *([f"dataset.masks={masks}"] if masks else [])])
    with open_dict(cfg):
        cfg.cache_dir = str(tmp_path / "cache")
    return Job(cfg)


def _edits(tmp_path, result) -> dict[str, torch.Tensor]:
    from benchmark.cache import ArtifactCache

    cache = ArtifactCache(tmp_path / "cache")
    return {r["image_id"]: cache.load_image(r["stage"], r["key"])
            for r in result.images if r["image"] == "g_x"}


def test_runner_gives_each_image_its_mask_and_matches_mask_file(tmp_path, folder):
    """mask=dataset (a: left half, b: right half) == mask=file with that image's half."""
    imgs, masks = folder
    for name, m in (("left", _columns(0, 32, 64, 64)), ("right", _columns(32, 64, 64, 64))):
        _grey(m, tmp_path / f"{name}.png")
    by_dataset = _edits(tmp_path, _job(tmp_path, imgs, ["generator.mask=dataset"], masks).run())
    left = _edits(tmp_path, _job(tmp_path, imgs, ["generator.mask=file",
                                                  f"generator.mask_file={tmp_path}/left.png"]).run())
    right = _edits(tmp_path, _job(tmp_path, imgs, ["generator.mask=file",
                                                   f"generator.mask_file={tmp_path}/right.png"]).run())
    # equal up to one 8-bit level (batches differ in their masks: float rounding)
    assert (by_dataset["a"] - left["a"]).abs().max() <= 1.01 / 255
    assert (by_dataset["b"] - right["b"]).abs().max() <= 1.01 / 255
    assert (by_dataset["b"] - left["b"]).abs().mean() > 2 / 255  # vs at most 1 level


def test_mask_is_part_of_the_generate_key_and_the_job_key(tmp_path, folder):
    imgs, masks = folder
    job = _job(tmp_path, imgs, ["generator.mask=dataset"], masks)
    first = job.run()
    # defense=none: G(x_adv) is G(x), read back from the cache
    assert first.stats["stages"]["generate"] == {**first.stats["stages"]["generate"],
                                                 "computed": 2, "cached": 2}
    before = job.job_key()
    keys = {r["image_id"]: r["key"] for r in first.images if r["image"] == "g_x"}

    mask_b = masks / "b.png"
    _grey(_columns(40, 56), mask_b)  # another mask for b
    stat = mask_b.stat()
    os.utime(mask_b, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    job = _job(tmp_path, imgs, ["generator.mask=dataset"], masks)
    assert job.job_key() != before
    again = job.run()
    assert again.stats["stages"]["generate"] == {**again.stats["stages"]["generate"],
                                                 "computed": 1, "cached": 3}
    new_keys = {r["image_id"]: r["key"] for r in again.images if r["image"] == "g_x"}
    assert new_keys["a"] == keys["a"] and new_keys["b"] != keys["b"]

    mask_key = content_key(FolderDataset(str(imgs), 64, masks=str(masks)).load(1, True).mask)
    record = json.loads((tmp_path / "cache" / "generate" / new_keys["b"][:2]
                         / f"{new_keys['b']}.json").read_text())
    assert record["inputs"][1] == f"mask:{mask_key}"


def test_mask_dataset_without_dataset_masks_names_both_keys(tmp_path, folder):
    imgs, _ = folder
    with pytest.raises(BenchError) as e:
        _job(tmp_path, imgs, ["generator.mask=dataset"])
    assert "generator.mask=dataset" in str(e.value) and "dataset.masks" in str(e.value)


def test_missing_mask_stops_the_job_before_any_model_runs(tmp_path, folder, monkeypatch):
    import benchmark.models.sd_pipeline as d

    imgs, masks = folder
    (masks / "a.png").unlink()

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(d, "load_sd_components", no_load)
    with pytest.raises(BenchError, match="no mask for image .*a.png"):
        _job(tmp_path, imgs, ["generator.mask=dataset"], masks).run()


# -- end to end ---------------------------------------------------------------------------------------


def test_bench_run_with_dataset_masks(workdir, folder):
    """Missing mask: exit 1 naming it; then edit rows; then one changed mask recomputes its image."""
    imgs, masks = folder
    args = ["run", "experiment=tiny", "generator=sd_inpaint", "generator.mask=dataset",
            "generator.steps=2",
            "dataset=folder", f"dataset.root={imgs}", f"dataset.masks={masks}",
            "defense.iterations=2", "metric=[psnr]", "progress=false"]
    kept = (masks / "b.png").read_bytes()
    (masks / "b.png").unlink()
    proc = bench(*args, "hydra.run.dir=missing", cwd=workdir, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"no mask for image {imgs / 'b.png'}" in proc.stderr and str(masks / "b") in proc.stderr

    (masks / "b.png").write_bytes(kept)
    bench(*args, "hydra.run.dir=first", cwd=workdir)
    rows = pd.read_csv(workdir / "first" / "samples.csv", dtype={"image_id": str})
    for pair in ("edit", "protection", "control"):
        assert set(rows[rows.pair == pair].image_id) == {"a", "b"}
    assert set(rows.generator) == {"sd_inpaint(mask=dataset,steps=2)"}

    _grey(_columns(44, 60), masks / "b.png")
    bench(*args, "hydra.run.dir=second", cwd=workdir)
    stages = json.loads((workdir / "second" / "stats.json").read_text())["stages"]
    counts = {k: (v["computed"], v["cached"]) for k, v in stages.items()}
    # b's four edits (G(x), G(x_adv), G(T(x_adv)), G(T(x))) again; a's and the rest from cache
    assert counts == {"protect": (0, 2), "transform": (0, 4), "generate": (4, 4), "job": (1, 0)}
    again = pd.read_csv(workdir / "second" / "samples.csv", dtype={"image_id": str})
    same = rows.merge(again, on=["image_id", "pair", "metric"])
    assert (same[same.image_id == "a"].value_x == same[same.image_id == "a"].value_y).all()
    edits_b = same[(same.image_id == "b") & (same.pair != "fidelity") & (same.pair != "invisibility")]
    assert (edits_b.value_x != edits_b.value_y).any()


# -- the inpainting defenses (mask.region=dataset) -------------------------------------------------


def test_face_mask_region_dataset_returns_the_given_masks():
    from benchmark.defenses.masks import FaceMask

    x = torch.zeros(2, 3, 32, 32)
    given = torch.zeros(2, 1, 64, 64)
    given[0, :, :, :32] = 1
    given[1, :, 32:] = 1
    out = FaceMask("dataset")(x, given)  # resized to the image and binarised
    assert out.shape == (2, 1, 32, 32) and set(out.unique().tolist()) == {0.0, 1.0}
    assert out[0, 0, :, :16].all() and not out[0, 0, :, 16:].any()
    assert out[1, 0, 16:].all() and not out[1, 0, :16].any()
    assert FaceMask("dataset").needs_masks and not FaceMask("face").needs_masks
    with pytest.raises(BenchError, match="dataset.masks"):
        FaceMask("dataset", component="photoguard_encoder")(x)


def _defense_job(tmp_path, imgs, masks=None, region="dataset"):
    cfg = _compose(["experiment=tiny", "dataset=folder", f"dataset.root={imgs}",
                    "dataset.limit=null", "defense=photoguard_encoder_inpaint",
                    f"defense.mask.region={region}", "defense.iterations=3", "generator=none",
                    "transform=identity", "metric=[psnr]", "pairs=[invisibility]",
                    "progress=false", "device=cpu",
                    *([f"dataset.masks={masks}"] if masks else [])])
    with open_dict(cfg):
        cfg.cache_dir = str(tmp_path / "cache")
    return Job(cfg)


def test_inpainting_defense_perturbs_only_what_the_dataset_mask_keeps(tmp_path, folder):
    """PhotoGuard's inpainting variant with mask.region=dataset: a's kept region is the right
    half (its mask repaints the left), b's the left half; the repainted half is untouched."""
    from benchmark.cache import ArtifactCache

    imgs, masks = folder
    job = _defense_job(tmp_path, imgs, masks)
    assert job.defense.needs_masks
    result = job.run()
    cache = ArtifactCache(tmp_path / "cache")
    images = {(r["image_id"], r["image"]): cache.load_image(r["stage"], r["key"])
              if r["stage"] != "input" else None for r in result.images}
    clean = {i: FolderDataset(str(imgs), 64).load(k).x for k, i in enumerate("ab")}
    for image_id, (repainted, kept) in {"a": (slice(0, 32), slice(32, 64)),
                                        "b": (slice(32, 64), slice(0, 32))}.items():
        delta = (images[(image_id, "x_adv")] - clean[image_id]).abs()
        assert delta[:, :, repainted].max() == 0
        assert delta[:, :, kept].mean() > 1 / 255
    # the mask is part of the protect key: another mask for b recomputes b only
    _grey(_columns(40, 56), masks / "b.png")
    again = _defense_job(tmp_path, imgs, masks).run()
    assert again.stats["stages"]["protect"] == {**again.stats["stages"]["protect"],
                                                "computed": 1, "cached": 1}


def test_inpainting_defense_region_dataset_needs_dataset_masks(tmp_path, folder):
    imgs, _ = folder
    with pytest.raises(BenchError) as e:
        _defense_job(tmp_path, imgs)
    assert "defense.mask.region=dataset" in str(e.value) and "dataset.masks" in str(e.value)


def test_the_resize_filter_is_a_choice(tmp_path):
    """dataset.interpolation: Pillow's filter for the crop's resize; bilinear is what the GAN
    references' torchvision Resize does to a PIL image."""
    import numpy as np
    from PIL import Image

    from benchmark.data.folder import FolderDataset
    from benchmark.errors import ConfigValueError
    from benchmark.images import from_pil

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (90, 90, 3), dtype=np.uint8))
    big.save(tmp_path / "a.png")
    for name, pillow in (("bilinear", Image.Resampling.BILINEAR),
                         ("lanczos", Image.Resampling.LANCZOS)):
        x = FolderDataset(root=str(tmp_path), resolution=32, interpolation=name).load(0).x
        assert torch.equal(x, from_pil(big.resize((32, 32), pillow))), name
    with pytest.raises(ConfigValueError, match="interpolation.*lanczos, bicubic, bilinear"):
        FolderDataset(root=str(tmp_path), resolution=32, interpolation="nearest")
