"""FaceShield: disrupt the identity and the image prompt that IP-Adapter reads from a face.

Jeong, In, Kim, Shin, Jeong, Yoon, Chung, Kim. "FaceShield: Defending Facial Image
against Deepfake Threats." ICCV 2025, pp. 10364-10374. arXiv:2412.09921.

L-inf PGD with sign steps, in pixel units out of 255, descending (per image)

    identity_weight * sum_r cos(F_r(A(x_adv)), F_r(A(x)))           ArcFace r50 and r100
  - projection_weight * L1(E(x_adv), E(x))                           CLIP image embedding
  + attention_weight * sum_l MSE(var_l(x_adv) * low_l, target * low_l)  UNet IP attention

where A aligns the face, F_r are ArcFace IResNets, E is IP-Adapter's CLIP image
encoder (its projected `image_embeds`), and var_l is, per head and latent pixel of
cross-attention layer l, the variance over the 4 image-prompt tokens of the
attention probabilities, from one UNet pass at t = 0 on the clean image's latent
with the empty prompt; low_l marks where that variance is in the lowest
`attention_quantile` for the CLEAN image. Each step, step * sign(grad), is blurred
with a Gaussian where an edge mask of it marks it and then subtracted from the
perturbation (attack.py: `new_delta = step_size * sign(grad)`, blurred, `delta -=
new_delta`; the edge mask is not odd, so blurring the negated step instead differs
near the border), and the whole perturbation is then low-passed in 8x8 block-DCT
before the projection onto the budget.

Defaults, from kuai-lab/iccv25_faceshield:
- README.md (run.sh settings; values and lines: configs/defense/faceshield.yaml's card):
  eps (`noise_clamp`, 0-255 units), step, iterations (`total_iter`), projection loss `l1`,
  attention loss `l2`, `attn_threshold`, ArcFace loss `cosine`, 512 px (`resize_shape`).
- attack.py `attack`: zero start (no random start); loss 4 * id_loss + (-clip_loss +
  attn_loss), id_loss = -(1 - cos_r50) - (1 - cos_r100) (utils/utils.py CosineLoss),
  i.e. 4 * (cos_r50 + cos_r100) up to a constant; the empty prompt; timestep 0; the
  clean latent is one VAE posterior sample; SD 1.5 (execute.sh:
  runwayml/stable-diffusion-v1-5) with IP-Adapter `ip-adapter_sd15` and the
  h94/IP-Adapter image encoder, adapter scale 1.0 (the processors' default); the
  CLIP input resized bilinearly to 224 and normalised with CLIP's mean and std.
  Reference model: runwayml/stable-diffusion-v1-5 (its copy
  stable-diffusion-v1-5/stable-diffusion-v1-5). Reference precision: fp32 weights, fp16
  autocast (the networks are loaded in float32 and the attack runs inside
  torch.amp.autocast('cuda')).
- attack.py `create_line_mask` / `apply_gaussian` / `scale_tensor`: the step is
  min-max normalised, filtered with 3x3 Sobel kernels per channel, the mask is 1 where
  |gx| or |gy| reaches its maximum, dilated by a 9x9 box; inside it the step is
  replaced by its Gaussian blur, kernel 9, sigma 5.
- utils/dct.py `dct_pass_filter`: the 8x8 low-pass mask LOW_PASS_8X8 below, applied
  per 8x8 block (zero padding to a multiple of 8), orthonormal DCT-II basis.
- The attention loss lives in files that repository imports but the stored copy
  lacks (utils/unet/unet_attack.py, utils/unet/ip_adapter/attention_processor.py).
  It is read from the same files, same call signature (`loss_fn`, `store_controller`,
  `gt_attn_map`, `unet_threshold`), in imagecbj/An-Adversarial-Attack-Method-against-
  Diffusion-Based-Face-Swapping-Forgery: IPAttnProcessor2_0 computes softmax(q k_ip^T /
  sqrt(d)), its variance over the image tokens (torch.var, unbiased), the clean pass
  keeps `variance < quantile(variance, threshold)` (`variance_threshold_loss`), the
  attack adds `l2(var * low, 1.875 * low)` per layer; AttackUnet_IP_all skips the
  layers of down blocks 0-1 and up blocks 2-3 (`high_res`), i.e. resolution levels
  0 and 1 of SD 1.5: `attention_min_level: 2`.

Deviations, each on purpose:
- Identity: the project's ArcFace (IResNet with arcface_torch's state-dict names,
  benchmark/models/iresnet.py) on the face aligned by the project's five-point
  similarity warp (dlib 68 landmarks -> Umeyama -> 112x112 template,
  benchmark/models/face_align.py), fitted on the clean image and applied to x_adv
  with grid_sample, so it is differentiable. FaceShield loads its two recognisers
  as pickled whole models from its authors' server, which bench does not unpickle,
  and its preprocessing file (utils/landmark/arcface_attack.py) is not public here.
  No face found: the whole image is resized to 112 (a warning names the image).
- attack.py computes the r100 target with the r50 network (`gt_id_100 =
  face_embedder50(gt_100)`); here each network is compared with its own embedding
  of the clean face.
- Block DCT: utils/dct.py's `encode` contracts the basis' frequency indices with
  the block's pixel indices (it applies the inverse transform), so its "low-pass"
  masks C^T X C and returns a constant block scaled by 0.83-1.24. Here the mask
  multiplies the DCT coefficients C X C^T, the low-pass the paper describes:
  constants pass unchanged, the highest frequencies are removed.
- The clean latent is encoded from [-1, 1] pixels (SD's convention); attack.py
  feeds [0, 1] pixels to the VAE.
- The pixels are clamped to [0, 1] at every step (the engine's projection); the
  reference clamps only the image it feeds the networks.

The recognisers are pluggable (`recognisers`: embedder configs that map aligned
112x112 faces in [0, 1] to features): the tiny scale uses two RandomFaceEmbedder
test doubles (benchmark/models/face_identity.py), whose "identity" means nothing.
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.build import build
from benchmark.defenses.latent_diffusion import DiffusionDefense
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.precision import ReferencePrecision
from benchmark.errors import BenchError, check
from benchmark.images import to_uint8
from benchmark.models import ip_adapter as ipa
from benchmark.models.face_align import (
    CROP_SIZE,
    TEMPLATE_112,
    detected_five_points,
    similarity_transform,
)
from benchmark.models.face_detection import DETECTORS, FaceDetector
from benchmark.models.sd_ops import NoiseStreams, embed_prompts, encode

log = logging.getLogger(__name__)

LOW_PASS_8X8 = ((1, 1, 1, 1, 1, 1, 0, 0),  # kept DCT coefficients: rows = vertical frequency
                (1, 1, 1, 1, 1, 0, 0, 0),
                (1, 1, 1, 1, 1, 0, 0, 0),
                (1, 1, 1, 1, 0, 0, 0, 0),
                (1, 1, 1, 0, 0, 0, 0, 0),
                (1, 1, 0, 0, 0, 0, 0, 0),
                (0, 0, 0, 0, 0, 0, 0, 0),
                (0, 0, 0, 0, 0, 0, 0, 0))
SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


# -- the perturbation filters ------------------------------------------------------------------


def dct_matrix(n: int = 8, device=None) -> torch.Tensor:
    """Orthonormal DCT-II: row u holds a_u cos((2x + 1) u pi / 2n) over pixels x."""
    u = torch.arange(n, dtype=torch.float64).view(-1, 1)
    x = torch.arange(n, dtype=torch.float64).view(1, -1)
    scale = torch.full((n, 1), math.sqrt(2 / n), dtype=torch.float64)
    scale[0] = math.sqrt(1 / n)
    return (scale * torch.cos((2 * x + 1) * u * math.pi / (2 * n))).float().to(device)


def block_dct_lowpass(delta: torch.Tensor, keep=LOW_PASS_8X8) -> torch.Tensor:
    """Zero the DCT coefficients outside `keep` in every 8x8 block of every channel."""
    keep = torch.as_tensor(keep, dtype=delta.dtype, device=delta.device)
    n = keep.shape[0]
    height, width = delta.shape[-2:]
    padded = F.pad(delta, (0, -width % n, 0, -height % n))
    rows, cols = padded.shape[-2] // n, padded.shape[-1] // n
    blocks = padded.unfold(2, n, n).unfold(3, n, n)  # N, C, rows, cols, n, n
    c = dct_matrix(n, delta.device).to(delta.dtype)
    filtered = c.T @ ((c @ blocks @ c.T) * keep) @ c
    out = filtered.permute(0, 1, 2, 4, 3, 5).reshape(*delta.shape[:2], rows * n, cols * n)
    return out[..., :height, :width]


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """The (size, size) Gaussian that sums to 1 (attack.py `apply_gaussian`: kernel 9, sigma 5),
    from kornia; `size` is odd (checked at build), so it is centred on the middle pixel."""
    from kornia.filters import get_gaussian_kernel2d

    return get_gaussian_kernel2d((size, size), (float(sigma), float(sigma)))[0]


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    weight = kernel.to(x).expand(x.shape[1], 1, *kernel.shape)
    return F.conv2d(x, weight, padding=kernel.shape[-1] // 2, groups=x.shape[1])


def edge_mask(step: torch.Tensor, dilation: int = 9) -> torch.Tensor:
    """1 around the strongest Sobel edges of the min-max normalised step, per image."""
    lo = step.amin(dim=(1, 2, 3), keepdim=True)
    span = step.amax(dim=(1, 2, 3), keepdim=True) - lo
    normalised = (step - lo) / span.clamp_min(1e-12)
    gx = _depthwise(normalised, torch.tensor(SOBEL_X)).abs()
    gy = _depthwise(normalised, torch.tensor(SOBEL_Y)).abs()
    peaks = (gx == gx.amax(dim=(1, 2, 3), keepdim=True)) | (gy == gy.amax(dim=(1, 2, 3),
                                                                          keepdim=True))
    peaks = peaks & (span > 0)  # a uniform step has no edges
    return _depthwise(peaks.to(step), torch.ones(dilation, dilation)).clamp(0, 1)


def blur_edges(step: torch.Tensor, kernel: int = 9, sigma: float = 5.0,
               dilation: int = 9) -> torch.Tensor:
    """The step, replaced by its Gaussian blur where `edge_mask` marks it."""
    mask = edge_mask(step, dilation)
    return _depthwise(step, gaussian_kernel(kernel, sigma)) * mask + step * (1 - mask)


# -- identity: alignment and recognisers -------------------------------------------------------


class FaceAlignment:
    """The clean image's five-point warp onto the 112x112 ArcFace template, applied with
    grid_sample (bilinear, black outside: cv2.warpAffine's INTER_LINEAR, BORDER_CONSTANT)."""

    def __init__(self, detector: str, detect_size: int, component: str):
        self.detector = FaceDetector(detector, detect_size, 0, component=component)

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3) maps from crop pixel (column, row, 1) to image pixel coordinates."""
        maps = []
        for i, xi in enumerate(x):
            image = np.ascontiguousarray(to_uint8(xi))
            boxes = self.detector.detect(image)
            height, width = image.shape[:2]
            if boxes:
                points = detected_five_points(image, boxes[0])
                forward = np.vstack([similarity_transform(points, TEMPLATE_112), [0, 0, 1]])
                maps.append(np.linalg.inv(forward)[:2])
            else:
                log.warning("faceshield: no face found in image %d of the batch; its identity "
                            "term sees the whole image resized to %d px", i, CROP_SIZE)
                maps.append(np.array([[(width - 1) / (CROP_SIZE - 1), 0, 0],
                                      [0, (height - 1) / (CROP_SIZE - 1), 0]]))
        return torch.tensor(np.stack(maps), dtype=torch.float32)

    @staticmethod
    def warp(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        rows, cols = torch.meshgrid(torch.arange(CROP_SIZE, dtype=torch.float32),
                                    torch.arange(CROP_SIZE, dtype=torch.float32), indexing="ij")
        crop = torch.stack([cols, rows, torch.ones_like(cols)], -1).view(-1, 3).to(x.device)
        source = crop @ maps.to(x.device).transpose(1, 2)  # N, 112*112, (column, row)
        grid = torch.stack([source[..., 0] / (width - 1), source[..., 1] / (height - 1)], -1)
        grid = (grid * 2 - 1).view(len(x), CROP_SIZE, CROP_SIZE, 2)
        return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                             align_corners=True)


# -- the UNet's image-prompt attention ---------------------------------------------------------


def _level(name: str, levels: int) -> int:
    """Resolution level of an attention layer: 0 = the full latent resolution."""
    if name.startswith("down_blocks."):
        return int(name.split(".")[1])
    if name.startswith("up_blocks."):
        return levels - 1 - int(name.split(".")[1])
    return levels - 1  # mid_block


class IPAttentionProbe:
    """Per adapter layer at level >= `min_level`, the variance over the image tokens of the
    image-prompt attention probabilities, (N, heads, queries), recorded by forward pre-hooks
    while the UNet runs (diffusers' processor never forms those probabilities)."""

    def __init__(self, unet, min_level: int):
        levels = len(unet.config.block_out_channels)
        self.layers = [name[: -len(".processor")] for name, proc in unet.attn_processors.items()
                       if hasattr(proc, "to_k_ip") and _level(name, levels) >= min_level]
        if not self.layers:
            raise BenchError(f"faceshield: attention_min_level={min_level} leaves no "
                             f"image-prompt attention layer of this UNet ({levels} levels)")

    @staticmethod
    def _record(records: list, module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        _, image_tokens = kwargs["encoder_hidden_states"]
        query = module.to_q(hidden)
        key = module.processor.to_k_ip[0](image_tokens[0])
        n, heads = query.shape[0], module.heads
        dim = query.shape[-1] // heads
        query = query.view(n, -1, heads, dim).transpose(1, 2)
        key = key.reshape(n, -1, heads, dim).transpose(1, 2)
        probs = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(dim), dim=-1)
        records.append(probs.float().var(dim=-1))

    def variances(self, unet, z: torch.Tensor, text: torch.Tensor,
                  embeds: torch.Tensor) -> list[torch.Tensor]:
        records: list[torch.Tensor] = []
        hooks = [unet.get_submodule(layer).register_forward_pre_hook(
            partial(self._record, records), with_kwargs=True) for layer in self.layers]
        dtype = next(unet.parameters()).dtype
        t = torch.zeros(len(z), dtype=torch.long, device=z.device)
        try:
            unet(z.to(dtype), t, encoder_hidden_states=text.to(dtype),
                 added_cond_kwargs={"image_embeds": [embeds[:, None].to(dtype)]})
        finally:
            for hook in hooks:
                hook.remove()
        return records


@dataclass
class CleanReference:
    """What the objective compares x_adv with: the clean image's features, computed once."""

    maps: torch.Tensor             # face alignment per image
    identities: list[torch.Tensor]  # per recogniser, (N, D)
    embeds: torch.Tensor           # CLIP image embeddings (N, D)
    latent: torch.Tensor           # the clean latent the UNet sees
    text: torch.Tensor             # the empty prompt's embedding
    low: list[torch.Tensor]        # per layer, 1 where the clean attention variance is low


# -- the defense -------------------------------------------------------------------------------


class FaceShield(DiffusionDefense):
    name = "faceshield"
    version = "2"  # 2: the step filter blurs +step * sign(grad), which is then subtracted
    reference_precision = ReferencePrecision("fp32", "fp16")
    model_parts = ("vae", "unet", "text_encoder", "tokenizer")

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 adapter: str = "h94/IP-Adapter",
                 weights: str = "models/ip-adapter_sd15.safetensors",
                 image_encoder: str = "models/image_encoder", adapter_scale: float = 1.0,
                 recognisers: list | None = None, eps: float = 12, step: float = 1,
                 iterations: int = 30, identity_weight: float = 4,
                 projection_weight: float = 1, attention_weight: float = 1,
                 attention_quantile: float = 0.2, attention_target: float = 1.875,
                 attention_min_level: int = 2, blur_kernel: int = 9, blur_sigma: float = 5,
                 edge_dilation: int = 9, lowpass: bool = True, detector: str = "cnn",
                 detect_size: int = 256, prompt: str = "", dtype: str = "fp32",
                 precision: str = "fp32", device: str = "auto"):
        self.pgd = LinfPGD(eps, step, iterations, random_start=False, component=self.name)
        for key, value in (("identity_weight", identity_weight),
                           ("projection_weight", projection_weight),
                           ("attention_weight", attention_weight),
                           ("adapter_scale", adapter_scale),
                           ("attention_target", attention_target)):
            check(self.name, key, value, isinstance(value, (int, float)) and value >= 0,
                  "a number >= 0")
        check(self.name, "attention_quantile", attention_quantile,
              isinstance(attention_quantile, (int, float)) and 0 < attention_quantile < 1,
              "a fraction in (0, 1)")
        check(self.name, "attention_min_level", attention_min_level,
              isinstance(attention_min_level, int) and attention_min_level >= 0,
              "an integer >= 0 (0 = every adapter layer)")
        for key, value in (("blur_kernel", blur_kernel), ("edge_dilation", edge_dilation)):
            check(self.name, key, value, isinstance(value, int) and value >= 1 and value % 2 == 1,
                  "an odd integer >= 1 (pixels)")
        check(self.name, "blur_sigma", blur_sigma,
              isinstance(blur_sigma, (int, float)) and blur_sigma > 0, "a number > 0 (pixels)")
        check(self.name, "lowpass", lowpass, isinstance(lowpass, bool), "true or false")
        check(self.name, "detector", detector, detector in DETECTORS, f"one of {DETECTORS}")
        check(self.name, "prompt", prompt, isinstance(prompt, str), "a string ('' = empty)")
        check(self.name, "recognisers", recognisers,
              isinstance(recognisers, list) and len(recognisers) > 0
              and all(isinstance(r, dict) and "_target_" in r for r in recognisers),
              "a non-empty list of face embedder configs with a _target_")
        self._setup_model(model, dtype, device, precision)
        ipa.require_adapter(adapter, weights, image_encoder)
        self.adapter, self.weights, self.image_encoder = adapter, weights, image_encoder
        self.adapter_scale = float(adapter_scale)
        self.recognisers = [build({**r, "device": str(self.device)},
                                  where=f"{self.name}.recognisers[{i}]")
                            for i, r in enumerate(recognisers)]
        self.alignment = FaceAlignment(detector, detect_size, self.name)
        self.identity_weight, self.projection_weight = identity_weight, projection_weight
        self.attention_weight, self.attention_quantile = attention_weight, attention_quantile
        self.attention_target, self.attention_min_level = attention_target, attention_min_level
        self.blur = partial(blur_edges, kernel=blur_kernel, sigma=blur_sigma,
                            dilation=edge_dilation)
        self.lowpass, self.prompt = lowpass, prompt

    # -- models ------------------------------------------------------------------------------

    @property
    def unet(self):
        unet = ipa.load_ip_unet(self.model_id, self.adapter, self.weights, self.image_encoder,
                                self.diffusion.dtype, self.device)
        ipa.set_scale(unet, self.adapter_scale)  # shared with the ip_adapter editor
        return unet

    @property
    def model_id(self) -> str:
        return self.diffusion.model

    @property
    def encoder(self):
        return ipa.load_image_encoder(self.adapter, self.image_encoder, self.diffusion.dtype,
                                      self.device)

    # -- objective ---------------------------------------------------------------------------

    def reference(self, x: torch.Tensor, seeds: Sequence[int]) -> CleanReference:
        parts, unet = self.parts, self.unet
        x = x.to(self.device)
        maps = self.alignment.fit(x)
        probe = IPAttentionProbe(unet, self.attention_min_level)
        with torch.no_grad(), self.autocast():
            faces = self.alignment.warp(x, maps)
            identities = [r(faces).float() for r in self.recognisers]
            embeds = ipa.image_embeds(self.encoder, x, mode="bilinear")
            latent = encode(parts.vae, x, NoiseStreams(seeds, self.device, self.name))
            text = embed_prompts(parts, [self.prompt]).expand(len(x), -1, -1)
            variances = probe.variances(unet, latent, text, embeds)
        low = []
        for v in variances:
            threshold = torch.stack([torch.quantile(vi.flatten(), self.attention_quantile)
                                     for vi in v]).view(-1, 1, 1)
            low.append((v < threshold).float())
        return CleanReference(maps, identities, embeds, latent, text, low)

    def terms(self, x_adv: torch.Tensor, ref: CleanReference) -> tuple[torch.Tensor, ...]:
        """(summed identity cosine, CLIP embedding L1, attention loss) per image."""
        unet = self.unet
        probe = IPAttentionProbe(unet, self.attention_min_level)
        with self.autocast():
            faces = self.alignment.warp(x_adv, ref.maps)
            cosine = sum(F.cosine_similarity(r(faces).float(), target, dim=1)
                         for r, target in zip(self.recognisers, ref.identities))
            embeds = ipa.image_embeds(self.encoder, x_adv, mode="bilinear")
            projection = (embeds - ref.embeds).abs().mean(1)
            variances = probe.variances(unet, ref.latent, ref.text, embeds)
        attention = sum((v * low - self.attention_target * low).pow(2).flatten(1).mean(1)
                        for v, low in zip(variances, ref.low))
        return cosine, projection, attention

    def objective(self, x_adv: torch.Tensor, ref: CleanReference) -> torch.Tensor:
        cosine, projection, attention = self.terms(x_adv, ref)
        return (self.identity_weight * cosine - self.projection_weight * projection
                + self.attention_weight * attention)

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        x = x.to(self.device)
        ref = self.reference(x, seeds)
        return self.pgd.minimize(x, lambda v: self.objective(v, ref), seeds,
                                 step_filter=self.blur,
                                 delta_filter=block_dct_lowpass if self.lowpass else None)
