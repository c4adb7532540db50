"""GAN attribute editors (StarGAN, AttGAN), the dataset's attribute file, and the defenses
against them: checkpoint layouts, target vectors, sign and budget of each attack."""

import re

import pytest
import torch

from benchmark.data.attributes import AttributeTable
from benchmark.errors import BenchError
from benchmark.generators.stargan import StarGAN
from benchmark.images import release
from benchmark.metrics.gan_edit import DisruptionRate, EditL2

SIZE = 32
SOURCE = {"Black_Hair": 1, "Young": 1}


def tiny_stargan(**options) -> StarGAN:
    return StarGAN(**{"weights": "random", "resolution": SIZE, "conv_dim": 8, "repeat_num": 1,
                      "source": SOURCE, "device": "cpu", **options})


def stargan_config(**options) -> dict:
    return {"_target_": "benchmark.generators.stargan.StarGAN", "weights": "random",
            "resolution": SIZE, "conv_dim": 8, "repeat_num": 1, "source": SOURCE,
            "device": "cpu", **options}


@pytest.fixture(scope="module")
def faces(one_thread):
    from benchmark.data.portraits import PortraitsDataset

    data = PortraitsDataset(resolution=SIZE, limit=3)
    return torch.stack([data.load(i).x for i in range(len(data))])


# -- StarGAN ----------------------------------------------------------------------------------


def official_stargan_names(conv_dim: int, c_dim: int, repeat_num: int) -> dict[str, tuple]:
    """Key -> shape of yunjey/stargan model.py Generator's state dict, written out from its
    layer list: conv7x7, IN, ReLU, 2 x (conv4x4/2, IN, ReLU), residual blocks,
    2 x (convT4x4/2, IN, ReLU), conv7x7, Tanh."""
    names: dict[str, tuple] = {}

    def norm(index: str, channels: int) -> None:
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            names[f"{index}.{buffer}"] = (channels,)
        names[f"{index}.num_batches_tracked"] = ()

    names["main.0.weight"] = (conv_dim, 3 + c_dim, 7, 7)
    norm("main.1", conv_dim)
    dims = [conv_dim, conv_dim * 2, conv_dim * 4]
    names["main.3.weight"] = (dims[1], dims[0], 4, 4)
    norm("main.4", dims[1])
    names["main.6.weight"] = (dims[2], dims[1], 4, 4)
    norm("main.7", dims[2])
    index = 9
    for _ in range(repeat_num):
        names[f"main.{index}.main.0.weight"] = (dims[2], dims[2], 3, 3)
        norm(f"main.{index}.main.1", dims[2])
        names[f"main.{index}.main.3.weight"] = (dims[2], dims[2], 3, 3)
        norm(f"main.{index}.main.4", dims[2])
        index += 1
    names[f"main.{index}.weight"] = (dims[2], dims[1], 4, 4)  # ConvTranspose2d: (in, out, k, k)
    norm(f"main.{index + 1}", dims[1])
    names[f"main.{index + 3}.weight"] = (dims[1], dims[0], 4, 4)
    norm(f"main.{index + 4}", dims[0])
    names[f"main.{index + 6}.weight"] = (3, dims[0], 7, 7)
    return names


def test_stargan_loads_a_checkpoint_with_the_official_names(tmp_path, one_thread):
    layout = official_stargan_names(8, 5, 2)
    state = {k: (torch.randn(shape) if shape else torch.tensor(0)) for k, shape in layout.items()}
    path = tmp_path / "200000-G.ckpt"
    torch.save(state, path)
    editor = tiny_stargan(weights=str(path), repeat_num=2)
    loaded = editor.network.state_dict()
    assert set(loaded) == set(layout)
    for key, value in state.items():
        assert torch.equal(loaded[key].float(), value.float()), key
    # a checkpoint of another layout is refused with its path in the message
    torch.save({k.replace("main.", "body."): v for k, v in state.items()}, tmp_path / "bad.ckpt")
    with pytest.raises(BenchError, match="bad.ckpt"):
        tiny_stargan(weights=str(tmp_path / "bad.ckpt"), repeat_num=2).edit(torch.rand(1, 3, SIZE, SIZE), [0])


def test_stargan_missing_weights_say_how_to_get_them():
    with pytest.raises(BenchError, match="pretrained-celeba-256x256.*HF_HOME|HF_HOME"):
        StarGAN(weights=None, device="cpu")
    with pytest.raises(BenchError, match="neither a local file"):
        StarGAN(weights="/nowhere/200000-G.ckpt", device="cpu")


def test_stargan_target_vectors_follow_create_labels():
    editor = tiny_stargan()
    source = torch.tensor([[1.0, 0, 0, 1, 0]])  # black hair, male, old
    assert editor.target_vector(source, ["Blond_Hair"]).tolist() == [[0, 1, 0, 1, 0]]
    assert editor.target_vector(source, ["Black_Hair"]).tolist() == [[1, 0, 0, 1, 0]]
    assert editor.target_vector(source, ["Male"]).tolist() == [[1, 0, 0, 0, 0]]
    assert editor.target_vector(source, ["Young", "Male"]).tolist() == [[1, 0, 0, 0, 1]]
    assert len(editor.all_target_vectors(source)) == 5


def test_stargan_edit_is_deterministic_and_its_target_matters(faces):
    editor = tiny_stargan()
    a = editor.edit(faces, [1, 2, 3])
    assert a.shape == faces.shape and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, editor.edit(faces, [1, 2, 3]))
    # instance norm per image: an image's edit does not depend on its batch mates
    assert torch.allclose(a[:1], editor.edit(faces[:1], [1]), atol=1e-5)
    blond = tiny_stargan(target=["Blond_Hair"]).edit(faces, [1, 2, 3])
    male = tiny_stargan(target=["Male"]).edit(faces, [1, 2, 3])
    assert (blond - male).abs().mean() > 1e-3



@pytest.mark.parametrize("editor,first_conv", [("stargan", "main.0"),
                                               ("attgan", "enc_layers.0.layers.0")])
def test_gan_editors_feed_images_in_minus_one_to_one(editor, first_conv, one_thread):
    # the references' loaders: ToTensor then Normalize(mean=0.5, std=0.5), i.e. 2x - 1
    from benchmark.build import build

    gan = build(stargan_config() if editor == "stargan" else attgan_config())
    seen = []
    hook = gan.network.get_submodule(first_conv).register_forward_pre_hook(
        lambda module, args: seen.append(args[0][:, :3].detach().clone()))
    try:
        black_white = torch.stack([torch.zeros(3, SIZE, SIZE), torch.ones(3, SIZE, SIZE)])
        gan.edit(black_white, [0, 1])
    finally:
        hook.remove()
    (image,) = seen  # StarGAN's first conv also sees the target channels; 3 image channels
    assert torch.equal(image[0], torch.full_like(image[0], -1.0))
    assert torch.equal(image[1], torch.full_like(image[1], 1.0))

def test_stargan_seed_target_covers_every_attribute():
    editor = tiny_stargan()
    chosen = {names[0] for names in editor.edit_targets(list(range(200)))}
    assert chosen == set(editor.attributes)


@pytest.mark.parametrize("key,value", [("target", ["Bald"]), ("target", "every"),
                                       ("source", {"Bald": 1}), ("conv_dim", 0),
                                       ("resolution", 30)])
def test_stargan_bad_values_are_refused(key, value):
    with pytest.raises(BenchError, match=key):
        tiny_stargan(**{key: value})


# -- the dataset's attribute file ---------------------------------------------------------------


def write_attributes(path, rows: dict[str, list[int]], names=("Black_Hair", "Blond_Hair",
                                                             "Brown_Hair", "Male", "Young")):
    lines = [str(len(rows)), " ".join(names)]
    lines += [f"{name} " + " ".join(str(v) for v in values) for name, values in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_attribute_file_rows_by_file_name_then_stem(tmp_path):
    table = AttributeTable(str(write_attributes(tmp_path / "attr.txt", {
        "000001.jpg": [1, -1, -1, 1, -1], "000002.jpg": [-1, 1, -1, -1, 1]})))
    from pathlib import Path

    assert table.lookup(Path("/x/000001.jpg"))["Male"] == 1
    assert table.lookup(Path("/x/000002.png")) == {"Black_Hair": 0, "Blond_Hair": 1,
                                                   "Brown_Hair": 0, "Male": 0, "Young": 1}
    with pytest.raises(BenchError, match="000003.jpg"):
        table.lookup(Path("/x/000003.jpg"))
    (tmp_path / "broken.txt").write_text("1\nMale Young\n000001.jpg 1\n")
    with pytest.raises(BenchError, match="line 3"):
        AttributeTable(str(tmp_path / "broken.txt"))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from benchmark.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def test_dataset_attributes_reach_the_editor_and_its_cache_key(tmp_path, one_thread, faces):
    from benchmark.images import to_pil
    from benchmark.runner import Job

    images = tmp_path / "images"
    images.mkdir()
    for i, x in enumerate(faces[:2]):
        to_pil(x).save(images / f"{i:06d}.png")
    rows = {"000000.jpg": [1, -1, -1, 1, -1], "000001.jpg": [-1, -1, 1, -1, 1]}
    attr = write_attributes(tmp_path / "list_attr_celeba.txt", rows)
    common = ["experiment=tiny", "generator=stargan", "defense=none", "transform=identity",
              "dataset=folder", f"dataset.root={images}", f"dataset.resolution={SIZE}",
              f"generator.resolution={SIZE}", "metric=[edit_l2]", "pairs=[protection]",
              "device=cpu", f"cache_dir={tmp_path / 'cache'}", "progress=false"]

    def job(*extra):
        return Job(compose([*common, *extra]))

    attributed = [f"dataset.attributes={attr}", "generator.source=dataset",
                  "generator.target=[Male]"]
    first = job(*attributed)
    assert first.side.attributes
    first.run()
    assert first.stats["generate"].computed == 2
    write_attributes(attr, {**rows, "000000.jpg": [1, -1, -1, -1, -1]})  # image 0 now female
    second = job(*attributed)
    second.run()  # the file changed: not served from the job cache
    assert second.stats["generate"].computed == 1  # only the changed image is edited again
    attr.write_text(attr.read_text().replace("000001.jpg", "000009.jpg"))
    with pytest.raises(BenchError, match="000001"):
        job(*attributed)
    with pytest.raises(BenchError, match="dataset.attributes"):
        job("generator.source=dataset")
    assert not job().side.attributes  # fixed source attributes (the tiny scale's)


# -- metrics ------------------------------------------------------------------------------------


def test_edit_l2_and_disruption_rate_use_the_references_units():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.2)])
    # [-1, 1] differences 0.2 and 0.4: MSE 0.04 and 0.16; the references' threshold is 0.05
    assert torch.allclose(EditL2().update(a, b), torch.tensor([0.04, 0.16], dtype=torch.float64))
    assert DisruptionRate().update(a, b).tolist() == [0.0, 1.0]


# -- defenses -----------------------------------------------------------------------------------


def distance_after_release(editor, x, x_adv, names=None) -> float:
    source = editor.source_vectors(len(x), None)
    vectors = ([editor.target_vector(source, names)] if names
               else editor.all_target_vectors(source))
    with torch.no_grad():
        return sum(float(EditL2().update(editor.translate(release(x_adv), c),
                                         editor.translate(x, c)).mean()) for c in vectors)


def uniform_noise(x: torch.Tensor, eps: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps / 255).clamp(0, 1)


def sign_noise(x: torch.Tensor, eps: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (x + torch.randint(0, 2, x.shape, generator=g).float().mul(2).sub(1) * eps / 255
            ).clamp(0, 1)


def test_disrupting_deepfakes_sign_and_budget(faces):
    from benchmark.defenses.disrupting_deepfakes import DisruptingDeepfakes

    defense = DisruptingDeepfakes(stargan_config(), condition=["Blond_Hair"], iterations=10)
    x_adv = defense.protect(faces, [1, 2, 3])
    assert (release(x_adv) - faces).abs().max() <= 6.375 / 255 + 1e-6
    attacked = distance_after_release(defense.editor, faces, x_adv, ["Blond_Hair"])
    noise = distance_after_release(defense.editor, faces, sign_noise(faces, 6.375),
                                   ["Blond_Hair"])
    assert attacked > 2 * noise
    # the published step with its sign flipped (minimising) moves the edit less than noise
    defense.pgd.step = -defense.pgd.step
    flipped = distance_after_release(defense.editor, faces, defense.protect(faces, [1, 2, 3]),
                                     ["Blond_Hair"])
    assert flipped < attacked / 2


def test_disrupting_deepfakes_joint_condition_protects_every_target(faces):
    from benchmark.defenses.disrupting_deepfakes import DisruptingDeepfakes

    defense = DisruptingDeepfakes(stargan_config(), condition="all", iterations=6)
    x_adv = defense.protect(faces, [1, 2, 3])
    noise = sign_noise(faces, 6.375)
    for name in defense.editor.attributes:
        assert (distance_after_release(defense.editor, faces, x_adv, [name])
                > distance_after_release(defense.editor, faces, noise, [name])), name


def lab_noise(x: torch.Tensor, bound: float) -> torch.Tensor:
    """x with +-bound (Lab a/b units) of random sign on a and b, lightness kept."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    lab = rgb_to_lab(x)
    g = torch.Generator().manual_seed(0)
    ab = lab[:, 1:] + torch.randint(0, 2, lab[:, 1:].shape, generator=g).float().mul(2).sub(1) * bound
    return lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1), clip=True)


def test_anti_forgery_moves_only_colour_and_beats_noise(faces):
    from kornia.color import rgb_to_lab

    from benchmark.defenses.anti_forgery import AntiForgery

    defense = AntiForgery(stargan_config())  # the published lr 1e-4, 100 Adam steps
    x_adv = release(defense.protect(faces, [1, 2, 3]))
    before, after = rgb_to_lab(faces), rgb_to_lab(x_adv)
    assert (after[:, 0] - before[:, 0]).abs().max() < 0.5  # lightness: 8-bit rounding only
    colour = (after[:, 1:] - before[:, 1:]).abs().max()
    assert 0.5 < colour <= 0.05 * 110 + 1  # a/b moved, within the bound (+ rounding)
    attacked = distance_after_release(defense.editor, faces, x_adv)
    # noise on a/b as large as Adam's 100 steps of 1e-4 can move (0.01 * 110 units)
    assert attacked > 3 * distance_after_release(defense.editor, faces, lab_noise(faces, 1.1))
    defense.pgd.step = -defense.pgd.step  # the published step with its sign flipped
    flipped = distance_after_release(defense.editor, faces, defense.protect(faces, [1, 2, 3]))
    assert flipped < attacked / 3


def test_anti_forgery_bound_binds_with_a_large_step(faces):
    from kornia.color import rgb_to_lab

    from benchmark.defenses.anti_forgery import AntiForgery

    defense = AntiForgery(stargan_config(), lr=0.02, iterations=10)
    x_adv = defense.protect(faces, [1, 2, 3])  # before rounding: the bound itself
    change = (rgb_to_lab(x_adv) - rgb_to_lab(faces)).abs()
    # lab_to_rgb clips out-of-gamut colours, which moves their lightness too; all others
    # keep it exactly and stay inside the a/b bound
    in_gamut = change[:, 0] < 1e-3
    assert in_gamut.float().mean() > 0.9
    assert change[:, 1:].amax(dim=1)[in_gamut].max() <= 0.05 * 110 + 1e-3
    assert change[:, 1:].max() > 0.04 * 110  # the bound is reached


def official_comgan_names(dim: int) -> dict[str, tuple]:
    """Key -> shape of DF_RAP net/ComGAN.py ComGenerator(dim_in=3, dim_out=dim)."""
    names: dict[str, tuple] = {"conv1.0.weight": (dim, 3, 3, 3),
                               "conv0.0.weight": (3, dim, 3, 3), "conv0.0.bias": (3,)}
    stages = {"conv2": (1, 2), "conv3": (2, 4), "conv4": (4, 8), "conv5": (8, 16),
              "conv4m": (16, 8), "conv3m": (8, 4), "conv2m": (4, 2), "conv1m": (2, 1)}
    for stage, (a, b) in stages.items():
        names[f"{stage}.0.main.0.weight"] = (dim * b, dim * a, 3, 3)
        names[f"{stage}.0.main.3.weight"] = (dim * b, dim * b, 3, 3)
        names[f"{stage}.0.conv1x1.weight"] = (dim * b, dim * a, 1, 1)
        for norm in ("1", "4"):
            for buffer in ("weight", "bias", "running_mean", "running_var"):
                names[f"{stage}.0.main.{norm}.{buffer}"] = (dim * b,)
            names[f"{stage}.0.main.{norm}.num_batches_tracked"] = ()
    for up, (a, b) in {"upsample54": (16, 8), "upsample43": (8, 4), "upsample32": (4, 2),
                       "upsample21": (2, 1)}.items():
        names[f"{up}.0.weight"] = (dim * a, dim * b, 4, 4)
    return names


def test_df_rap_loads_a_comgan_state_dict_with_the_official_names(tmp_path, faces):
    from benchmark.defenses.df_rap import DFRAP

    layout = official_comgan_names(4)
    state = {k: (torch.rand(shape) + 0.5 if shape else torch.tensor(0))
             for k, shape in layout.items()}
    torch.save(state, tmp_path / "comgan.pth")
    defense = DFRAP(stargan_config(), comgan_weights=str(tmp_path / "comgan.pth"),
                    comgan_dim=4, iterations=2)
    surrogate = defense.pgd.transforms[0]
    assert set(surrogate.comgan.state_dict()) == set(layout)
    assert torch.equal(surrogate.comgan.state_dict()["conv3.0.main.1.running_var"],
                       state["conv3.0.main.1.running_var"])
    assert surrogate(faces, [1, 2, 3]).shape == faces.shape
    assert "ComGAN" in defense.surrogate_name


def test_df_rap_jpeg_surrogate_draws_the_social_network_qualities(faces):
    from benchmark.defenses.df_rap import DFRAP

    defense = DFRAP(stargan_config())
    surrogate = defense.pgd.transforms[0]
    drawn = [surrogate.quality_for(s) for s in range(400)]
    assert set(drawn) <= set(surrogate.qualities) and len(set(drawn)) >= 8
    assert 0.15 < drawn.count(80) / len(drawn) < 0.3  # 22 % in DF-RAP's qf.txt
    out = surrogate(faces, [1, 2, 3])
    assert out.shape == faces.shape
    assert (out - faces).abs().mean() > 1 / 255  # not all quality 100: compression happened


def test_df_rap_sign_and_budget_after_real_jpeg(faces):
    from conftest import jpeg

    from benchmark.defenses.df_rap import DFRAP

    defense = DFRAP(stargan_config(), condition=["Male"], iterations=10)
    x_adv = release(defense.protect(faces, [1, 2, 3]))
    assert (x_adv - faces).abs().max() <= 6.375 / 255 + 1e-6
    attacked = distance_after_release(defense.editor, faces, jpeg(x_adv, 85), ["Male"])
    noise = distance_after_release(defense.editor, faces, jpeg(sign_noise(faces, 6.375), 85),
                                   ["Male"])
    assert attacked > 2 * noise
    defense.pgd.step = -defense.pgd.step
    flipped = distance_after_release(defense.editor, faces,
                                     jpeg(release(defense.protect(faces, [1, 2, 3])), 85),
                                     ["Male"])
    assert flipped < attacked / 2



def test_df_rap_attacks_through_comgan_when_it_has_weights(faces, monkeypatch):
    from benchmark.defenses.df_rap import DFRAP, ComGAN

    calls = []
    forward = ComGAN.forward
    monkeypatch.setattr(ComGAN, "forward", lambda self, x: calls.append(x.shape) or forward(self, x))
    with_comgan = DFRAP(stargan_config(), condition=["Male"], iterations=3,
                        comgan_weights="random", comgan_dim=4)
    fallback = DFRAP(stargan_config(), condition=["Male"], iterations=3)
    protected = with_comgan.protect(faces, [1, 2, 3])
    assert len(calls) == 3  # attack.py: G(ComG(X), c) once per iteration
    assert all(shape == faces.shape for shape in calls)
    assert (release(protected) - faces).abs().max() <= 6.375 / 255 + 1e-6
    jpeg_protected = fallback.protect(faces, [1, 2, 3])
    assert len(calls) == 3  # the fallback never calls it
    assert (release(protected) != release(jpeg_protected)).float().mean() > 0.1


def test_df_rap_comgan_jpeg_compresses_comgan_output_as_isjpeg_does(faces):
    from kornia.enhance import jpeg_codec_differentiable

    from benchmark.defenses.df_rap import DFRAP

    plain = DFRAP(stargan_config(), comgan_weights="random", comgan_dim=4).pgd.transforms[0]
    both = DFRAP(stargan_config(), comgan_weights="random", comgan_dim=4,
                 comgan_jpeg=True).pgd.transforms[0]
    seeds = [s for s in range(200) if plain.quality_for(s) == 100][:1]
    seeds += [s for s in range(200) if plain.quality_for(s) < 100][:2]
    with torch.no_grad():
        comgan = (plain.comgan(faces * 2 - 1) + 1) / 2  # ComGenerator's U-Net on [-1, 1] images
        assert torch.allclose(plain(faces, seeds), comgan, atol=1e-6)
        out = both(faces, seeds)
        assert torch.allclose(out[0], comgan[0], atol=1e-6)  # quality 100: no JPEG
        for i in (1, 2):
            q = torch.tensor([float(plain.quality_for(seeds[i]))])
            expected = jpeg_codec_differentiable(comgan[i:i + 1], q).clamp(0, 1)[0]
            assert torch.allclose(out[i], expected, atol=1e-5)
            assert (out[i] - comgan[i]).abs().max() > 1e-3
    with pytest.raises(BenchError, match="comgan_jpeg"):
        DFRAP(stargan_config(), comgan_jpeg="yes")

# -- AttGAN -------------------------------------------------------------------------------------


def attgan_config(**options) -> dict:
    return {"_target_": "benchmark.generators.attgan.AttGAN", "weights": "random",
            "resolution": SIZE, "enc_dim": 4, "dec_dim": 4, "source": {"Black_Hair": 1},
            "device": "cpu", **options}


def official_attgan_names(dim: int, n_attrs: int = 13) -> dict[str, tuple]:
    """Key -> shape of AttGAN-PyTorch attgan.py Generator(enc_dim=dec_dim=dim, 5 layers,
    shortcut_layers=1, inject_layers=0): nn.py blocks hold `layers` = conv, BatchNorm, act."""
    names: dict[str, tuple] = {}

    def bn(prefix: str, channels: int) -> None:
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            names[f"{prefix}.layers.1.{buffer}"] = (channels,)
        names[f"{prefix}.layers.1.num_batches_tracked"] = ()

    enc = [dim * 2 ** i for i in range(5)]
    for i, out in enumerate(enc):
        names[f"enc_layers.{i}.layers.0.weight"] = (out, 3 if i == 0 else enc[i - 1], 4, 4)
        bn(f"enc_layers.{i}", out)
    n_in = enc[-1] + n_attrs
    for i in range(4):
        out = dim * 2 ** (4 - i)
        names[f"dec_layers.{i}.layers.0.weight"] = (n_in, out, 4, 4)
        bn(f"dec_layers.{i}", out)
        n_in = out + (out // 2 if i == 0 else 0)
    names["dec_layers.4.layers.0.weight"] = (n_in, 3, 4, 4)
    names["dec_layers.4.layers.0.bias"] = (3,)
    return names


def test_attgan_loads_an_official_checkpoint_dict(tmp_path):
    from benchmark.build import build

    layout = official_attgan_names(4)
    state = {k: (torch.rand(shape) + 0.5 if shape else torch.tensor(1)) for k, shape in layout.items()}
    torch.save({"G": state, "D": {"conv.0.layers.0.weight": torch.zeros(1)}},
               tmp_path / "weights.199.pth")
    editor = build(attgan_config(weights=str(tmp_path / "weights.199.pth")))
    loaded = editor.network.state_dict()
    assert set(loaded) == set(layout)
    assert torch.equal(loaded["dec_layers.1.layers.1.running_var"],
                       state["dec_layers.1.layers.1.running_var"])
    assert not editor.network.training  # test.py: attgan.eval()


def test_attgan_target_vectors_follow_its_test_script():
    from benchmark.build import build

    editor = build(attgan_config())
    names = editor.attributes
    source = torch.zeros(1, 13)
    source[0, names.index("Black_Hair")] = 1
    source[0, names.index("No_Beard")] = 1
    blond = editor.target_vector(source, ["Blond_Hair"])[0]
    # the flipped attribute at test_int (1.0), the others at +-thres_int (0.5); the other
    # hair colour is switched off (check_attribute_conflict)
    assert blond[names.index("Blond_Hair")] == 1.0
    assert blond[names.index("Black_Hair")] == -0.5
    assert blond[names.index("No_Beard")] == 0.5 and blond[names.index("Bald")] == -0.5
    mustache = editor.target_vector(source, ["Mustache"])[0]
    assert mustache[names.index("No_Beard")] == -0.5
    assert len(editor.all_target_vectors(source)) == 13


def test_attgan_disrupting_deepfakes_beats_noise(faces):
    from benchmark.defenses.disrupting_deepfakes import DisruptingDeepfakes

    defense = DisruptingDeepfakes(attgan_config(), condition=["Bald"], iterations=10)
    x_adv = defense.protect(faces, [1, 2, 3])
    assert (release(x_adv) - faces).abs().max() <= 6.375 / 255 + 1e-6
    attacked = distance_after_release(defense.editor, faces, x_adv, ["Bald"])
    noise = distance_after_release(defense.editor, faces, sign_noise(faces, 6.375), ["Bald"])
    assert attacked > 2 * noise


# -- CMUA-Watermark -----------------------------------------------------------------------------


def cmua(tmp_path, **options):
    from benchmark.defenses.cmua import CMUA

    return CMUA(editors={"stargan": stargan_config(), "attgan": attgan_config()},
                training_set={"_target_": "benchmark.data.portraits.PortraitsDataset",
                              "resolution": SIZE, "limit": 3},
                **{"iterations": 4, "watermark_batch": 4, "cache_dir": str(tmp_path / "cache"),
                   **options})


def test_cmua_one_cached_watermark_for_every_image(tmp_path, faces, monkeypatch):
    defense = cmua(tmp_path)
    x_adv = defense.protect(faces, [1, 2, 3])
    delta, up = x_adv - faces, defense._watermark.expand_as(faces)
    inside = ((faces + up) > 0) & ((faces + up) < 1)  # not clipped to the image range
    assert inside.float().mean() > 0.9
    assert torch.allclose(delta[inside], up[inside], atol=1e-6)
    assert 1 / 255 < delta.abs().max() <= 6.375 / 255 + 1e-6
    # a second defense (another job of the sweep) reads the watermark and trains nothing
    again = cmua(tmp_path)
    monkeypatch.setattr(type(again), "train", lambda self: pytest.fail("trained again"))
    assert torch.equal(again.protect(faces, [4, 5, 6]), x_adv)
    # another training set is another watermark
    other = cmua(tmp_path, training_images=2)
    monkeypatch.undo()
    assert not torch.equal(other.protect(faces, [1, 2, 3]), x_adv)


def test_cmua_watermark_disrupts_both_editors_more_than_noise(tmp_path, faces):
    defense = cmua(tmp_path)
    x_adv = defense.protect(faces, [1, 2, 3])
    up = defense._watermark
    g = torch.Generator().manual_seed(0)
    flips = torch.randint(0, 2, up.shape, generator=g).float() * 2 - 1
    noise = (faces + up.abs() * flips).clamp(0, 1)  # the same magnitude, random signs
    for editor in defense.editors.values():
        assert (distance_after_release(editor, faces, x_adv)
                > distance_after_release(editor, faces, noise)), editor.name


def test_cmua_watermark_batch_is_part_of_the_watermark_key(tmp_path, faces):
    # the watermark is a mean over each batch with one momentum update per batch: 3 training
    # images in one batch of 4 or in batches of 2 + 1 are two watermarks, also in one cache
    whole = cmua(tmp_path, watermark_batch=4)
    whole.protect(faces, [1, 2, 3])
    split = cmua(tmp_path, watermark_batch=2)
    split.protect(faces, [1, 2, 3])
    assert not torch.allclose(whole._watermark, split._watermark, atol=1e-6)
    assert torch.allclose(split._watermark, split.train(), atol=1e-6)  # computed, not served


ATTGAN_NAMES = ("Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows",
                "Eyeglasses", "Male", "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin",
                "Young")


def cmua_job_overrides(tmp_path, faces, attributes: bool = True) -> list[str]:
    """A bench job protecting 3 images of a folder with CMUA, trained on that folder (its
    default training set) by editors that read the attribute file."""
    from benchmark.images import to_pil

    images = tmp_path / "images"
    if not images.exists():
        images.mkdir()
        for i, x in enumerate(faces):
            to_pil(x).save(images / f"{i:06d}.png")
        write_attributes(tmp_path / "attr.txt", {
            f"{i:06d}.png": [1 if (i + k) % 3 == 0 else -1 for k in range(13)] for i in range(3)},
            names=ATTGAN_NAMES)
    return ["experiment=tiny", "defense=cmua", "generator=none", "transform=identity",
            "dataset=folder", f"dataset.root={images}", f"dataset.resolution={SIZE}",
            *([f"dataset.attributes={tmp_path / 'attr.txt'}"] if attributes else []),
            "defense.editors.stargan.source=dataset", "defense.editors.attgan.source=dataset",
            f"defense.editors.stargan.resolution={SIZE}",
            f"defense.editors.attgan.resolution={SIZE}", "metric=[psnr]", "pairs=[invisibility]",
            "device=cpu", f"cache_dir={tmp_path / 'cache'}", "progress=false"]


def protected_by_input(cache) -> dict[str, list[torch.Tensor]]:
    """Every cached protected image, grouped by the clean image it was made from."""
    import json

    from benchmark.cache import ArtifactCache

    out: dict[str, list[torch.Tensor]] = {}
    store = ArtifactCache(cache)
    for sidecar in sorted((cache / "protect").rglob("*.json")):
        key = sidecar.name.split(".")[0]
        image = store.load_image("protect", key)
        if image is not None:
            out.setdefault(json.loads(sidecar.read_text())["inputs"][0], []).append(image)
    return out


def test_cmua_protected_images_follow_the_training_images_and_attributes(tmp_path, faces,
                                                                         one_thread):
    from benchmark.images import content_key, to_pil
    from benchmark.runner import Job

    overrides = cmua_job_overrides(tmp_path, faces)
    first = Job(compose(overrides))
    first.run()
    assert first.stats["protect"].computed == 3
    unchanged = [content_key(release(x)) for x in faces[1:]]
    before = protected_by_input(tmp_path / "cache")
    # one training image changes under the same path: a new watermark, so images 1 and 2
    # (inputs unchanged) are protected again, and differently
    to_pil(faces[0].flip(-1)).save(tmp_path / "images" / "000000.png")
    second = Job(compose(overrides))
    second.run()
    assert second.stats["protect"].computed == 3
    after = protected_by_input(tmp_path / "cache")
    for key in unchanged:
        assert len(before[key]) == 1 and len(after[key]) == 2
        assert any(not torch.equal(image, before[key][0]) for image in after[key])
    # the attribute file changes (same images): another watermark again
    write_attributes(tmp_path / "attr.txt", {
        f"{i:06d}.png": [1 if (i + k) % 2 == 0 else -1 for k in range(13)] for i in range(3)},
        names=ATTGAN_NAMES)
    third = Job(compose(overrides))
    third.run()
    assert third.stats["protect"].computed == 3
    for key in unchanged:
        assert len(protected_by_input(tmp_path / "cache")[key]) == 3


def test_cmua_missing_training_attributes_stop_the_job_before_any_model(tmp_path, faces,
                                                                        monkeypatch):
    from benchmark.defenses.cmua import CMUA
    from benchmark.generators.gan import GanEditor
    from benchmark.runner import Job

    monkeypatch.setattr(GanEditor, "network", property(lambda self: pytest.fail("model ran")))
    monkeypatch.setattr(CMUA, "train", lambda self: pytest.fail("trained"))
    with pytest.raises(BenchError, match="dataset.attributes"):
        Job(compose(cmua_job_overrides(tmp_path, faces, attributes=False)))
    attr = tmp_path / "attr.txt"
    attr.write_text(attr.read_text().replace("000002.png", "000009.png"))
    with pytest.raises(BenchError, match="000002"):
        Job(compose(cmua_job_overrides(tmp_path, faces)))


def test_cmua_published_step_direction_beats_the_flipped_one(tmp_path, faces):
    # universal_perturb_*: X + a * grad.sign() ascends the edit distance; the same training
    # with the step's sign flipped descends it (the watermark then barely moves the edit)
    defense = cmua(tmp_path, cache_dir=None)
    published = defense.train()
    defense.step = -defense.step
    flipped = defense.train()
    for editor in defense.editors.values():
        ascended = distance_after_release(editor, faces, (faces + published).clamp(0, 1))
        descended = distance_after_release(editor, faces, (faces + flipped).clamp(0, 1))
        assert ascended > 2 * descended, (editor.name, ascended, descended)


@pytest.mark.parametrize("editor", [
    {"_target_": "benchmark.generators.base.NoGenerator"},       # a generator, not a GAN editor
    {"_target_": "benchmark.defenses.noise.UniformNoise"},       # not a generator at all
])
def test_the_gan_defenses_refuse_an_editor_that_is_not_a_gan_attribute_editor(editor, tmp_path):
    from benchmark.defenses.cmua import CMUA
    from benchmark.defenses.disrupting_deepfakes import DisruptingDeepfakes
    from benchmark.errors import ConfigValueError

    with pytest.raises(ConfigValueError, match="editor.*a GAN attribute editor"):
        DisruptingDeepfakes(editor)
    with pytest.raises(ConfigValueError, match="editors.x.*a GAN attribute editor"):
        CMUA(editors={"x": editor}, cache_dir=str(tmp_path),
             training_set={"_target_": "benchmark.data.portraits.PortraitsDataset", "limit": 1})


def released_watermark(tmp_path, up, name="perturbation.pt"):
    path = tmp_path / name
    torch.save(up, path)
    return str(path)


def test_cmua_uses_the_authors_released_watermark_without_its_editors(tmp_path, faces):
    """watermark_file: the reference's perturbation.pt, (3, H, W) in [-1, 1] units, added to
    each image; no editor is built (their weights are not set here)."""
    from benchmark.defenses.cmua import ALGORITHM, CMUA

    up = (torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.05
    unset = {"_target_": "benchmark.generators.stargan.StarGAN", "weights": None}
    defense = CMUA(editors={"stargan": unset}, training_set={}, eps=6.375,
                   watermark_file=released_watermark(tmp_path, up))
    x_adv = defense.protect(faces, [1, 2, 3])
    assert torch.equal(x_adv, (faces + up / 2).clamp(0, 1))
    assert 6.3 / 255 < (x_adv - faces).abs().max() <= 6.375 / 255 + 1e-6
    batched = CMUA(editors={}, training_set={}, watermark_file=released_watermark(
        tmp_path, up[None], "batched.pt"))
    assert torch.equal(batched.protect(faces, [1, 2, 3]), x_adv)
    assert defense.version.startswith(f"{ALGORITHM}+watermark:file-")
    other = CMUA(editors={}, training_set={}, watermark_file=released_watermark(
        tmp_path, -up, "other.pt"))
    assert other.version != defense.version


@pytest.mark.parametrize("content, message", [
    (torch.full((3, 8, 8), 0.06), r"reaches 7\.650/255, above eps 6\.375/255"),
    (torch.zeros(8, 8), r"holds \(8, 8\); expected .* \(3, H, W\)"),
    ({"up": torch.zeros(3, 8, 8)}, r"holds dict"),
])
def test_cmua_refuses_a_watermark_file_it_cannot_use(tmp_path, content, message):
    from benchmark.defenses.cmua import CMUA

    path = released_watermark(tmp_path, content)
    with pytest.raises(BenchError, match=rf"cmua.watermark_file: {re.escape(path)} {message}"):
        CMUA(editors={}, training_set={}, watermark_file=path)
    with pytest.raises(BenchError, match=r"watermark_file='/nope.pt': no such file.*VDIGPKU"):
        CMUA(editors={}, training_set={}, watermark_file="/nope.pt")
