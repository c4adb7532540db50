"""FaceShield and the IP-Adapter editor it defends against, on the tiny random models.

The perturbation filters are checked on hand-made patterns; the attack must keep
its budget after 8-bit release and lower its objective below both the clean image
and uniform noise of the same size, and must fail that check with the PGD step's
sign flipped (what catches a sign error). The identity term is recomputed here
with the recognisers on a plain resize (what the alignment does without a face).
"""

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, bench

from benchmark.defenses.faceshield import (
    LOW_PASS_8X8,
    FaceAlignment,
    FaceShield,
    IPAttentionProbe,
    block_dct_lowpass,
    blur_edges,
    dct_matrix,
    edge_mask,
    gaussian_kernel,
)
from benchmark.errors import ConfigValueError, MissingModelError
from benchmark.generators.ip_adapter import IPAdapterEditor
from benchmark.images import generator_for, release
from benchmark.models.diffusion import load_unet

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = "cpu"
SEEDS = [11, 12]
RANDOM_FACES = [{"_target_": "benchmark.models.face_identity.RandomFaceEmbedder", "dim": 64,
                 "seed": 0},
                {"_target_": "benchmark.models.face_identity.RandomFaceEmbedder", "dim": 64,
                 "seed": 1}]


def faceshield(**options) -> FaceShield:
    base = {"model": "tiny/sd", "adapter": "tiny/ip-adapter", "recognisers": RANDOM_FACES,
            "attention_min_level": 1, "detector": "hog", "iterations": 6, "device": CPU}
    return FaceShield(**{**base, **options})


@pytest.fixture(scope="module")
def x(portraits64):
    """Two real portraits at 32 px (too small for dlib: the alignment falls back to a resize)."""
    return F.interpolate(portraits64[:2], size=(32, 32), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def noise_like(x, x_adv):
    u = torch.rand(x.shape, generator=generator_for(99)) * 2 - 1
    return (x + u * (x_adv - x).abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)


# -- the perturbation filters ------------------------------------------------------------------


def dct_pattern(u: int, v: int) -> torch.Tensor:
    """The 8x8 DCT basis image of vertical frequency u, horizontal frequency v."""
    c = dct_matrix(8)
    return torch.outer(c[u], c[v]).expand(1, 3, 8, 8).clone()


def test_block_dct_lowpass_keeps_constants_and_removes_high_frequencies():
    constant = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(block_dct_lowpass(constant), constant, atol=1e-6)
    checker = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)])
    checker = checker.expand(1, 3, 8, 8)
    # a pixel checkerboard is not one DCT basis image; 99 % of its energy is removed
    assert block_dct_lowpass(checker).pow(2).sum() < 0.02 * checker.pow(2).sum()
    for u, v in [(0, 1), (2, 4), (5, 1)]:  # kept by the mask
        assert LOW_PASS_8X8[u][v] == 1
        assert torch.allclose(block_dct_lowpass(dct_pattern(u, v)), dct_pattern(u, v), atol=1e-6)
    for u, v in [(0, 7), (7, 0), (1, 5), (6, 6)]:  # removed
        assert LOW_PASS_8X8[u][v] == 0
        assert block_dct_lowpass(dct_pattern(u, v)).abs().max() < 1e-6
    odd = torch.randn(2, 3, 12, 20, generator=generator_for(0))
    once = block_dct_lowpass(odd)
    assert once.shape == odd.shape and once.norm() < odd.norm()
    # a projection: the corner blocks (full 8x8) come back unchanged the second time
    assert torch.allclose(block_dct_lowpass(once)[..., :8, :16], once[..., :8, :16], atol=1e-5)


def test_edge_blur_smooths_the_step_only_around_its_strongest_edges():
    step = -torch.ones(1, 3, 32, 32)
    step[..., 12:20] = 1  # a vertical stripe: edges at columns 11|12 and 19|20
    mask = edge_mask(step, dilation=9)
    assert mask[..., 10:22].eq(1).all()
    assert mask[..., :6].eq(0).all() and mask[..., 26:].eq(0).all()
    out = blur_edges(step, kernel=9, sigma=5, dilation=9)
    assert torch.equal(out[..., :6], step[..., :6]) and torch.equal(out[..., 26:], step[..., 26:])
    assert (out[0, 0, 16, 10:14].abs() < 0.99).all()  # blurred across the edge
    assert torch.equal(blur_edges(torch.ones(1, 3, 16, 16)), torch.ones(1, 3, 16, 16))


@pytest.mark.parametrize("size,sigma", [(9, 5.0), (3, 0.8), (7, 2.5)])
def test_gaussian_kernel_is_the_normalised_two_dimensional_gaussian(size, sigma):
    # written out over the 2-D grid (not as a product of 1-D kernels): exp(-r^2 / 2 sigma^2)
    # around the middle pixel, divided by its sum
    kernel = gaussian_kernel(size, sigma)
    middle = size // 2
    expected = torch.tensor([[math.exp(-((i - middle) ** 2 + (j - middle) ** 2) / (2 * sigma ** 2))
                              for j in range(size)] for i in range(size)])
    expected = expected / expected.sum()
    assert kernel.shape == (size, size)
    assert torch.allclose(kernel, expected, rtol=1e-5, atol=1e-7)
    assert kernel[middle, middle] == kernel.max() and kernel[0, 0] == kernel.min()


def test_alignment_without_a_face_is_a_plain_resize(x):
    alignment = FaceAlignment("hog", 64, "faceshield")
    maps = alignment.fit(x)
    expected = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=True)
    assert torch.allclose(alignment.warp(x, maps), expected, atol=1e-5)


# -- the attack --------------------------------------------------------------------------------


def test_faceshield_lowers_its_objective_below_clean_and_noise(x, flipped):
    defense = faceshield()
    ref = defense.reference(x, SEEDS)
    x_adv = release(defense.protect(x, SEEDS))
    with torch.no_grad():
        clean, adv, noisy = (defense.objective(v, ref) for v in (x, x_adv, noise_like(x, x_adv)))
    ok = (adv < clean) & (adv < noisy)
    assert bool(ok.all()) != flipped, (clean, adv, noisy)


def test_faceshield_identity_term_lowers_the_face_similarity(x):
    defense = faceshield(projection_weight=0, attention_weight=0, lowpass=False)
    x_adv = release(defense.protect(x, SEEDS))

    def similarity(v):  # written out: recognisers on the resized image (no face at 32 px)
        faces = F.interpolate(v, size=(112, 112), mode="bilinear", align_corners=True)
        clean = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=True)
        return sum(F.cosine_similarity(r(faces), r(clean), dim=1) for r in defense.recognisers)

    with torch.no_grad():
        adv, noisy = similarity(x_adv), similarity(noise_like(x, x_adv))
    assert (adv < noisy).all() and (adv < 2 - 1e-6).all(), (adv, noisy)


# written out, independently of the defense's code: the reference's CLIP input (bilinear resize
# to the encoder's size, CLIP mean / std) and its image-prompt attention (softmax(q k_ip^T /
# sqrt(d)) of the adapter layers, read from the modules' own outputs during the UNet pass)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
TINY_LEVEL_1 = {"down_blocks.1.attentions.0.transformer_blocks.0.attn2",
                "down_blocks.1.attentions.1.transformer_blocks.0.attn2",
                "mid_block.attentions.0.transformer_blocks.0.attn2",
                "up_blocks.0.attentions.0.transformer_blocks.0.attn2",
                "up_blocks.0.attentions.1.transformer_blocks.0.attn2",
                "up_blocks.0.attentions.2.transformer_blocks.0.attn2"}


def clip_embedding(defense, v):
    size = defense.encoder.config.image_size
    pixels = F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False)
    pixels = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return defense.encoder(pixels).image_embeds


def attention_variances(defense, ref, v) -> list[torch.Tensor]:
    """Per adapter layer (tiny UNet, levels >= 1), (N, heads, queries) variance over the 4
    image tokens of the image-prompt attention probabilities, for image v."""
    unet, outputs, hooks = defense.unet, {}, []
    for name in sorted(TINY_LEVEL_1):
        module = unet.get_submodule(name)
        for part, sub in (("q", module.to_q), ("k", module.processor.to_k_ip[0])):
            hooks.append(sub.register_forward_hook(
                lambda m, args, out, key=(name, part): outputs.__setitem__(key, out)))
    try:
        unet(ref.latent, torch.zeros(len(v), dtype=torch.long), encoder_hidden_states=ref.text,
             added_cond_kwargs={"image_embeds": [clip_embedding(defense, v)[:, None]]})
    finally:
        for hook in hooks:
            hook.remove()
    variances = []
    for name in sorted(TINY_LEVEL_1):
        heads = unet.get_submodule(name).heads
        q, k = outputs[(name, "q")], outputs[(name, "k")]
        d = q.shape[-1] // heads
        q = q.view(len(v), -1, heads, d).transpose(1, 2)
        k = k.view(len(v), -1, heads, d).transpose(1, 2)
        variances.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1).var(dim=-1))
    return variances


def test_faceshield_projection_term_moves_the_clip_embedding(x):
    defense = faceshield(identity_weight=0, attention_weight=0, lowpass=False)
    # from x itself the L1 term alone has no gradient (|e - e0| at e = e0: torch's sign(0) = 0),
    # so the attack would never move; in FaceShield the identity term moves it first. Here a
    # random start gives the term its gradient
    defense.pgd.random_start = True
    x_adv = release(defense.protect(x, SEEDS))
    with torch.no_grad():
        clean = clip_embedding(defense, x)
        adv, noisy = ((clip_embedding(defense, v) - clean).abs().mean(1)
                      for v in (x_adv, noise_like(x, x_adv)))
    assert (adv > 1.5 * noisy).all(), (adv, noisy)


def test_faceshield_attention_term_raises_the_low_variance_of_the_clean_image(x):
    defense = faceshield(identity_weight=0, projection_weight=0, lowpass=False)
    ref = defense.reference(x, SEEDS)
    with torch.no_grad():
        clean = attention_variances(defense, ref, x)
    low = []
    for v in clean:  # the lowest 20 % of each image's variances, per layer
        threshold = torch.stack([vi.flatten().quantile(0.2) for vi in v]).view(-1, 1, 1)
        low.append((v < threshold).float())
    assert len(ref.low) == len(low) and all(torch.equal(a, b) for a, b in zip(ref.low, low))

    def loss(v):  # variance pushed toward 1.875 where the clean one is low
        return sum(((var - 1.875) * m).pow(2).flatten(1).mean(1)
                   for var, m in zip(attention_variances(defense, ref, v), low))

    x_adv = release(defense.protect(x, SEEDS))
    with torch.no_grad():
        before, adv, noisy = loss(x), loss(x_adv), loss(noise_like(x, x_adv))
    assert (adv < before).all() and (adv < noisy).all(), (before, adv, noisy)
    with torch.no_grad():
        assert torch.allclose(defense.terms(x_adv, ref)[2], adv, rtol=1e-4)


def sd15_shaped_ip_unet():
    """SD 1.5's block layout (3 cross-attention down blocks + 1 plain, mirrored up blocks,
    2 layers per block) at width 32, with an IP-Adapter processor on every attn2."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0

    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 32, 32, 32), layers_per_block=2,
        cross_attention_dim=32, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    unet.set_attn_processor({name: IPAdapterAttnProcessor2_0(32, 32)
                             if name.endswith("attn2.processor") else AttnProcessor2_0()
                             for name in unet.attn_processors})
    return unet


def test_attention_probe_reads_the_reference_layers():
    # AttackUnet_IP_all skips down blocks 0-1 and up blocks 2-3 of SD 1.5: it reads down
    # block 2, the mid block and up block 1
    layers = IPAttentionProbe(sd15_shaped_ip_unet(), min_level=2).layers
    blocks = [f"down_blocks.2.attentions.{i}" for i in range(2)] + ["mid_block.attentions.0"]
    blocks += [f"up_blocks.1.attentions.{i}" for i in range(3)]
    assert set(layers) == {f"{b}.transformer_blocks.0.attn2" for b in blocks}
    # the tiny UNet (2 levels): its adapter layers sit at level 1
    assert set(IPAttentionProbe(faceshield().unet, min_level=1).layers) == TINY_LEVEL_1

def test_faceshield_keeps_its_budget_after_release_and_is_deterministic(x):
    x = release(x)  # an 8-bit image, as read from a file
    defense = faceshield(eps=4, iterations=5)
    x_adv = defense.protect(x, SEEDS)
    published = release(x_adv)
    assert published.min() >= 0 and published.max() <= 1
    assert (published - x).abs().max() <= 4 / 255 + 1e-6 and (published != x).any()
    assert torch.equal(x_adv, defense.protect(x, SEEDS))


@pytest.mark.parametrize("override", [{"eps": -1}, {"attention_quantile": 1},
                                      {"blur_kernel": 8}, {"recognisers": []},
                                      {"identity_weight": -4}, {"detector": "mtcnn"}])
def test_bad_values_stop_the_build(override):
    with pytest.raises(ConfigValueError):
        faceshield(**override)


def test_faceshield_and_the_editor_share_one_adapter_unet_and_leave_sd_plain():
    defense = faceshield()
    editor = IPAdapterEditor(model="tiny/sd", adapter="tiny/ip-adapter", resolution=32, steps=2,
                             device=CPU)
    assert defense.unet is editor.unet
    assert editor.unet is not load_unet("tiny/sd", "fp32", CPU)
    assert not any(hasattr(p, "to_k_ip") for p in load_unet("tiny/sd", "fp32", CPU)
                   .attn_processors.values())


# -- the editor --------------------------------------------------------------------------------


def test_ip_adapter_edit_is_paired_and_reads_the_image_prompt(x):
    editor = IPAdapterEditor(model="tiny/sd", adapter="tiny/ip-adapter", resolution=32, steps=2,
                             device=CPU)
    other = x.flip(0)
    y = editor.edit(x, SEEDS)
    assert y.shape == (2, 3, 32, 32) and torch.equal(y, editor.edit(x, SEEDS))
    # the portrait is the prompt: another portrait moves the edit far beyond float noise
    assert (editor.edit(other, SEEDS) - y).abs().mean() > 1e-3
    assert (editor.edit(x, [s + 1 for s in SEEDS]) - y).abs().mean() > 1e-2  # its own noise
    text_only = IPAdapterEditor(model="tiny/sd", adapter="tiny/ip-adapter", resolution=32,
                                steps=2, scale=0.0, device=CPU)
    assert torch.equal(text_only.edit(x, SEEDS), text_only.edit(other, SEEDS))


def test_ip_adapter_negative_branch_gets_a_zero_image_embedding(x):
    # IP-Adapter's generate: uncond_image_prompt_embeds = image_proj_model(zeros_like(clip
    # embedding)); diffusers runs the unconditional half of the batch first
    from benchmark.models import ip_adapter as ipa

    editor = IPAdapterEditor(model="tiny/sd", adapter="tiny/ip-adapter", resolution=32, steps=2,
                             device=CPU)
    seen = []
    hook = editor.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["image_embeds"][0]),
        with_kwargs=True)
    try:
        editor.edit(x, SEEDS)
    finally:
        hook.remove()
    with torch.no_grad():
        prompt = ipa.image_embeds(editor.encoder, x, mode="bicubic")  # (2, D), nonzero
    assert prompt.abs().amax(dim=1).min() > 0
    # one pipeline per image (2 denoising calls each at least): (zero, its own embedding)
    assert len(seen) >= 4 and len(seen) % 2 == 0
    half = len(seen) // 2
    for i, calls in enumerate((seen[:half], seen[half:])):
        for embeds in calls:
            assert embeds.shape == (2, 1, prompt.shape[1])
            assert torch.equal(embeds[0], torch.zeros_like(embeds[0]))
            assert torch.allclose(embeds[1, 0], prompt[i], atol=1e-6)


def test_ip_adapter_edit_does_not_depend_on_batch_mates(x):
    editor = IPAdapterEditor(model="tiny/sd", adapter="tiny/ip-adapter", resolution=32, steps=2,
                             device=CPU)
    both = editor.edit(x, SEEDS)
    assert torch.allclose(both[0], editor.edit(x[:1], SEEDS[:1]), atol=1e-5)
    assert torch.allclose(both[1], editor.edit(x[1:], SEEDS[1:]), atol=1e-5)

def test_missing_adapter_weights_name_the_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(MissingModelError, match="h94/IP-Adapter"):
        IPAdapterEditor(model="tiny/sd", adapter="h94/IP-Adapter", device=CPU)


def test_bench_runs_faceshield_against_ip_adapter_end_to_end(workdir):
    bench("run", "experiment=tiny", "defense=faceshield", "generator=ip_adapter", "device=cpu",
          "pairs=[edit,invisibility]", "metric=[psnr,ssim]", "hydra.run.dir=out", *TINY,
          cwd=workdir)
    with open(workdir / "out" / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["defense"] for r in rows} == {"faceshield"}
    assert {r["generator"] for r in rows} == {"ip_adapter"}
    invisible = [float(r["value"]) for r in rows
                 if r["pair"] == "invisibility" and r["metric"] == "psnr"]
    assert len(invisible) == 3 and all(20 < v < math.inf for v in invisible)
    assert any(r["pair"] == "edit" and r["metric"] == "ssim" for r in rows)


def test_arcface_recogniser_loads_an_arcface_torch_checkpoint_and_passes_gradients(tmp_path):
    from benchmark.models.arcface import ArcFaceRecogniser
    from benchmark.models.iresnet import IResNet

    torch.manual_seed(0)
    path = tmp_path / "backbone.pth"
    torch.save(IResNet("r18").state_dict(), path)
    recogniser = ArcFaceRecogniser(weights=str(path), arch="r18", device=CPU)
    faces = torch.rand(2, 3, 112, 112, requires_grad=True)
    features = recogniser(faces)
    assert features.shape == (2, 512)
    (grad,) = torch.autograd.grad(features.sum(), faces)
    assert grad.abs().sum() > 0
    with pytest.raises(ConfigValueError, match="r18"):
        ArcFaceRecogniser(weights=str(path), arch="r50", device=CPU)
