"""Talking-head models: a portrait and an audio clip in, video frames out; and the denoising
loss that Silencer-I attacks. Two back ends with one interface:

    generate(x, audio, seeds, frames, steps, guidance) -> (N, F, C, H, W) frames in [0, 1]
    denoising_loss(x, audio, noise, timesteps, noise_offset, audio_dropout, snr_gamma) -> (N,)

`tiny/talking-head` (TinyTalkingHead): RANDOM weights, built in-process (benchmark.models.tiny):
tiny/sd's VAE, a tiny UNet that denoises each frame's latent with the portrait's latent
concatenated to its input and cross-attention to audio tokens, and a spectral stand-in for
wav2vec. It is not Hallo: it has Hallo's interface, its diffusion arithmetic (below) and its
audio windowing, so the generator, Silencer-I and the runner run offline, in tests and in
`experiment=tiny`. Its frames are meaningless.

`hallo` (HalloTalkingHead): Hallo (Xu et al. 2024, "Hallo: Hierarchical Audio-Driven Visual
Synthesis for Portrait Image Animation", arXiv:2406.08801), from a local checkout of
fudan-generative-vision/hallo and its `pretrained_models` folder (not a PyPI package: see the
README's set-up). It imports Hallo's own modules and builds them as its scripts/inference.py
does; this adapter has not been run against the real weights here (no weights offline).

Values from Hallo (fudan-generative-vision/hallo, configs/inference/default.yaml and
scripts/inference.py `inference_process`): 512 x 512 source image, 16 kHz audio, 25 fps,
`n_sample_frames` 16 frames per clip, 2 motion frames (zero images for the first clip),
40 DDIM steps, classifier-free guidance 3.5 (unconditional branch: zero face embedding, zero
face mask, zero audio: hallo/animate/face_animate.py), pose/face/lip weights 1.0, face expand
ratio 1.2, wav2vec2-base-960h with all 12 hidden layers (`features: all`), each frame's audio
a window of +-2 frames (`process_audio_emb`), AudioProjModel(seq_len 5, blocks 12, channels 768,
intermediate 512, output 768, 32 context tokens), ImageProjModel(512-d face embedding, 4
tokens), FaceLocator(320 channels), the reference image latent from the VAE posterior mean
x 0.18215, and a DDIMScheduler with betas 0.00085..0.012 "linear", zero-terminal-SNR rescaling,
"trailing" spacing, v-prediction. Only the first clip (16 frames) is generated here.

Values from Silencer-I's loss (yuangan/Silencer, Silencer-I/protect/protect_hallo.py,
`HalloNet.forward`, with hallo/configs/train/stage2.yaml): the training scheduler is the one
above with betas "scaled_linear"; the target latent is a VAE posterior sample x 0.18215 of
the image itself, without gradient (only the reference path carries the gradient: VAE encoder,
reference UNet at t = 0 with the face embedding, reference attention into the denoising UNet);
one frame (`clip_length` 1), the reference image followed by 2 zeroed motion frames; noise
offset 0.05 (`noise += 0.05 * randn(b, c, 1, 1, 1)`); t uniform in [min_timesteps,
min_timesteps + 100) with min_timesteps 200 (README and protect_hallo.sh, "used in paper");
the audio of one random frame (start index in [n_motion_frames, len - clip_length]) of a
wav2vec embedding, zeroed with probability 0.05 (`uncond_audio_ratio`); loss = MSE(v_pred,
v_target) x min(SNR + 1, 5) / (SNR + 1) (`snr_gamma` 5, v-prediction). The face embedding and
masks come from Hallo's ImageProcessor on the clean image.
"""

import logging
import os
import sys
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.data.audio import Audio, resample
from benchmark.errors import BenchError, MissingModelError, check
from benchmark.images import content_key, generator_for, to_pil
from benchmark.models import DTYPES, shared

log = logging.getLogger(__name__)

AUDIO_RATE = 16000
FPS = 25
LATENT_SCALE = 0.18215
BACKENDS = ("tiny/talking-head", "hallo")
# Hallo's pretrained_models layout (its README, "Download Pretrained Models")
HALLO_FILES = {
    "base model": "stable-diffusion-v1-5/unet/config.json",
    "VAE": "sd-vae-ft-mse/config.json",
    "motion module": "motion_module/mm_sd_v15_v2.ckpt",
    "Hallo's net": "hallo/net.pth",
    "wav2vec": "wav2vec/wav2vec2-base-960h/config.json",
    "face analysis": "face_analysis/models",
}
HALLO_SETUP = (
    "Hallo is not a PyPI package: `git clone https://github.com/fudan-generative-vision/hallo`, "
    "`pip install -r hallo/requirements.txt`, and download its weights into "
    "hallo/pretrained_models (`git lfs clone https://huggingface.co/fudan-generative-ai/hallo "
    "pretrained_models`); then set BENCH_HALLO_ROOT=/path/to/hallo (or generator.hallo_root= "
    "and defense.hallo_root=; its pretrained_models folder is looked for inside it unless "
    "pretrained=/path is given)")


def scheduler(beta_schedule: str):
    """Hallo's DDIM scheduler: zero terminal SNR, trailing spacing, v-prediction."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule=beta_schedule, steps_offset=1, clip_sample=False,
                         rescale_betas_zero_snr=True, timestep_spacing="trailing",
                         prediction_type="v_prediction")


def min_snr_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR + 1, gamma) / (SNR + 1): the min-SNR weight of a v-prediction loss."""
    a = alphas_cumprod.to(t.device)[t].float()
    snr = a / (1 - a) + 1
    return torch.clamp(snr, max=gamma) / snr


def frame_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """The initial latent noise of one video, drawn from the clean image's seed (paired noise)."""
    return torch.randn(tuple(shape), generator=generator_for(seed))


def _load_vae(device):
    from benchmark.models.diffusion import load_vae

    return load_vae("tiny/sd", "fp32", device)


class TinyTalkingHead:
    """tiny/talking-head: RANDOM weights; Hallo's interface and diffusion arithmetic."""

    def __init__(self, device: torch.device):
        from benchmark.models import tiny

        self.device = device
        self.vae = _load_vae(device)
        self.unet = tiny.tiny_talking_head_unet().to(device).requires_grad_(False)
        self.audio_encoder = tiny.TinyAudioEncoder().to(device).requires_grad_(False)
        self.train_scheduler = scheduler("scaled_linear")

    def latents(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """Scaled VAE latents of images in [0, 1]: the posterior mean, or a sample drawn from
        `noise` (NoiseStreams)."""
        dist = self.vae.encode(x.to(self.device) * 2 - 1).latent_dist
        z = dist.mean if noise is None else dist.mean + dist.std * noise.randn_like(dist.mean)
        return z * LATENT_SCALE

    def audio_tokens(self, audio: Sequence[Audio], frames: int) -> torch.Tensor:
        """(N, frames, tokens, dim)."""
        return torch.stack([self.audio_encoder(resample(a, AUDIO_RATE), frames) for a in audio])

    def _velocity(self, z_t, t, ref, tokens) -> torch.Tensor:
        return self.unet(torch.cat([z_t, ref], dim=1), t, encoder_hidden_states=tokens).sample

    @torch.no_grad()
    def generate(self, x: torch.Tensor, audio: Sequence[Audio], seeds: Sequence[int],
                 frames: int, steps: int, guidance: float) -> torch.Tensor:
        n = len(x)
        tokens = self.audio_tokens(audio, frames).flatten(0, 1)  # (N * F, K, D)
        ref = self.latents(x).repeat_interleave(frames, dim=0)
        sampler = scheduler("linear")
        sampler.set_timesteps(steps)
        z = torch.cat([frame_noise(s, (frames, *ref.shape[1:])) for s in seeds]).to(self.device)
        z = z * sampler.init_noise_sigma
        if guidance > 1:  # Hallo's unconditional branch: zero audio, batched with the other
            tokens = torch.cat([torch.zeros_like(tokens), tokens])
            ref = torch.cat([ref, ref])
        for t in sampler.timesteps:
            z_in = torch.cat([z, z]) if guidance > 1 else z
            v = self._velocity(z_in, t.expand(len(z_in)).to(self.device), ref, tokens)
            if guidance > 1:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance * (v_cond - v_uncond)
            z = sampler.step(v, t, z).prev_sample
        param = next(self.vae.parameters())
        y = self.vae.decode((z / LATENT_SCALE).to(param.dtype)).sample.float()
        return ((y + 1) / 2).clamp(0, 1).view(n, frames, *y.shape[1:]).cpu()

    def denoising_loss(self, x: torch.Tensor, audio: Sequence[Audio], noise, timesteps,
                       noise_offset: float, audio_dropout: float, snr_gamma: float,
                       frames: int) -> torch.Tensor:
        """Silencer-I's objective per image (one draw of t, noise, audio frame and dropout)."""
        noise.begin()
        with torch.no_grad():
            target_latent = self.latents(x.detach(), noise)
        ref = self.latents(x, noise)
        eps = noise.randn_like(ref) + noise_offset * noise.randn((ref.shape[1], 1, 1))
        low, high = timesteps
        t = noise.randint(high - low) + low
        z_t = self.train_scheduler.add_noise(target_latent, eps, t)
        target = self.train_scheduler.get_velocity(target_latent, eps, t)
        tokens = self.audio_tokens(audio, frames)  # (N, F, K, D)
        pick = noise.randint(frames).to(tokens.device)
        tokens = tokens[torch.arange(len(tokens), device=tokens.device), pick]
        keep = (torch.stack([torch.rand((), generator=g) for g in noise.generators])
                >= audio_dropout).to(tokens)
        tokens = tokens * keep.view(-1, 1, 1)
        v = self._velocity(z_t, t, ref, tokens)
        weight = min_snr_weight(self.train_scheduler.alphas_cumprod, t, snr_gamma)
        return (v.float() - target.float()).pow(2).flatten(1).mean(1) * weight


def _write_png(x: torch.Tensor, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    to_pil(x).save(path)
    return path


def _write_wav(audio: Audio, folder: Path, name: str) -> Path:
    path = folder / f"{name}.wav"
    pcm = (resample(audio, AUDIO_RATE).clamp(-1, 1).numpy() * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(AUDIO_RATE)
        f.writeframes(pcm.tobytes())
    return path


class MissingHalloError(MissingModelError):
    """Hallo's checkout or weights are absent: the message says what is missing and the set-up."""

    def __init__(self, message: str):
        self.model_id = "hallo"
        BenchError.__init__(self, message)


def hallo_paths(hallo_root: str | None, pretrained: str | None, component: str
                ) -> tuple[Path, Path]:
    """The checkout and weights folders, or one error naming what is missing and the set-up."""
    if hallo_root in (None, "", "???"):
        raise MissingHalloError(f"{component}: model=hallo needs a local Hallo checkout and its "
                                f"weights. {HALLO_SETUP}. Without them use "
                                f"model=tiny/talking-head (random weights, plumbing only).")
    root = Path(hallo_root).expanduser()
    if not (root / "hallo" / "models" / "unet_3d.py").is_file():
        raise MissingHalloError(f"{component}: hallo_root={hallo_root!r} is not a Hallo checkout "
                                f"(no hallo/models/unet_3d.py in it). {HALLO_SETUP}")
    weights = Path(pretrained).expanduser() if pretrained else root / "pretrained_models"
    missing = [f"{what} ({weights / rel})" for what, rel in HALLO_FILES.items()
               if not (weights / rel).exists()]
    if missing:
        raise MissingHalloError(f"{component}: Hallo's weights are incomplete in {weights}: "
                                f"missing {'; '.join(missing)}. {HALLO_SETUP}")
    return root, weights


def hallo_status() -> tuple[str, str]:
    """(present | missing, detail) of the Hallo checkout BENCH_HALLO_ROOT names, for
    `bench weights check`: Hallo is a checkout with its weights, not a Hugging Face model."""
    root = os.environ.get("BENCH_HALLO_ROOT")
    if not root:
        return "missing", ("a local checkout, not a Hugging Face model: set BENCH_HALLO_ROOT to "
                           "a Hallo checkout with its pretrained_models (README: talking heads)")
    try:
        checkout, weights = hallo_paths(root, None, "BENCH_HALLO_ROOT")
    except MissingHalloError as e:
        checkout = (Path(root).expanduser() / "hallo" / "models" / "unet_3d.py").is_file()
        return "incomplete" if checkout else "missing", str(e).split(". ", 1)[0]
    return "present", f"checkout {checkout}, weights {weights}"


class HalloTalkingHead:
    """Hallo through its own modules (a user's checkout); see the module docstring."""

    N_MOTION_FRAMES = 2
    FACE_EXPAND_RATIO = 1.2
    RESOLUTION = 512

    def __init__(self, root: Path, weights: Path, dtype: torch.dtype, device: torch.device,
                 audio_separator: bool = True):
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        try:
            from hallo.models.audio_proj import AudioProjModel
            from hallo.models.face_locator import FaceLocator
            from hallo.models.image_proj import ImageProjModel
            from hallo.models.unet_2d_condition import UNet2DConditionModel
            from hallo.models.unet_3d import UNet3DConditionModel
        except ImportError as e:
            raise BenchError(f"Hallo's modules cannot be imported from {root}: {e} (install its "
                             f"requirements.txt into this environment)") from None
        from diffusers import AutoencoderKL
        from omegaconf import OmegaConf

        config = OmegaConf.load(root / "configs" / "inference" / "default.yaml")
        self.root, self.weights, self.dtype, self.device = root, weights, dtype, device
        self.config = config
        self.separator = weights / "audio_separator" / "Kim_Vocal_2.onnx" if audio_separator \
            else None
        self.vae = AutoencoderKL.from_pretrained(weights / "sd-vae-ft-mse")
        reference_unet = UNet2DConditionModel.from_pretrained(
            weights / "stable-diffusion-v1-5", subfolder="unet")
        denoising_unet = UNet3DConditionModel.from_pretrained_2d(
            weights / "stable-diffusion-v1-5", weights / "motion_module" / "mm_sd_v15_v2.ckpt",
            subfolder="unet",
            unet_additional_kwargs=OmegaConf.to_container(config.unet_additional_kwargs),
            use_landmark=False)
        net = torch.nn.Module()  # the attribute names of net.pth (scripts/inference.py `Net`)
        net.reference_unet = reference_unet
        net.denoising_unet = denoising_unet
        net.face_locator = FaceLocator(conditioning_embedding_channels=320)
        net.imageproj = ImageProjModel(cross_attention_dim=denoising_unet.config.cross_attention_dim,
                                       clip_embeddings_dim=512, clip_extra_context_tokens=4)
        net.audioproj = AudioProjModel(seq_len=5, blocks=12, channels=768, intermediate_dim=512,
                                       output_dim=768, context_tokens=32)
        state = torch.load(weights / "hallo" / "net.pth", map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        self.net = net.to(device, dtype).requires_grad_(False).eval()
        self.vae = self.vae.to(device, dtype).requires_grad_(False).eval()
        self.train_scheduler = scheduler("scaled_linear")
        self._prepared: dict[tuple, tuple] = {}

    # -- Hallo's preprocessing (face embedding and masks, wav2vec), on files as Hallo reads them

    def prepare_image(self, x: torch.Tensor, folder: Path) -> tuple:
        from hallo.datasets.image_processor import ImageProcessor

        path = _write_png(x, folder, "portrait")
        size = (self.RESOLUTION, self.RESOLUTION)
        with ImageProcessor(size, str(self.weights / "face_analysis")) as processor:
            return processor.preprocess(str(path), str(folder), self.FACE_EXPAND_RATIO)

    def audio_embedding(self, audio: Audio, frames: int, folder: Path) -> torch.Tensor:
        """wav2vec features (all 12 layers) per video frame, windowed +-2 frames."""
        from hallo.datasets.audio_processor import AudioProcessor

        path = _write_wav(audio, folder, "audio")
        separator = self.separator if self.separator and self.separator.is_file() else None
        wav2vec = str(self.weights / "wav2vec" / "wav2vec2-base-960h")
        with AudioProcessor(AUDIO_RATE, FPS, wav2vec, False,
                            None if separator is None else str(separator.parent),
                            None if separator is None else separator.name,
                            str(folder / "audio_preprocess"), device=str(self.device)
                            ) as processor:
            emb, _ = processor.preprocess(str(path), frames)
        index = torch.arange(len(emb))[:, None] + torch.arange(-2, 3)
        return emb[index.clamp(0, len(emb) - 1)]

    def _to_hallo(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float(), size=(self.RESOLUTION,) * 2, mode="bilinear",
                          antialias=True, align_corners=False) if x.shape[-1] != self.RESOLUTION \
            else x
        return (x * 2 - 1).to(self.device, self.dtype)

    @torch.no_grad()
    def generate(self, x: torch.Tensor, audio: Sequence[Audio], seeds: Sequence[int],
                 frames: int, steps: int, guidance: float) -> torch.Tensor:
        from hallo.animate.face_animate import FaceAnimatePipeline

        pipe = FaceAnimatePipeline(vae=self.vae, reference_unet=self.net.reference_unet,
                                   denoising_unet=self.net.denoising_unet,
                                   face_locator=self.net.face_locator, scheduler=scheduler("linear"),
                                   image_proj=self.net.imageproj)
        out = []
        for xi, clip, seed in zip(x, audio, seeds):
            with tempfile.TemporaryDirectory(prefix="bench-hallo-") as tmp:
                folder = Path(tmp)
                pixels, region, face_emb, full, face, lip = self.prepare_image(xi, folder)
                emb = self.audio_embedding(clip, frames, folder)[:frames]
            ref = torch.cat([pixels[None], pixels[None].repeat(self.N_MOTION_FRAMES, 1, 1, 1)])
            tokens = self.net.audioproj(emb[None].to(self.device, self.dtype))
            videos = pipe(
                ref_image=ref[None], audio_tensor=tokens,
                face_emb=torch.as_tensor(face_emb).reshape(1, -1), face_mask=region[None],
                pixel_values_full_mask=[m.repeat(frames, 1) for m in full],
                pixel_values_face_mask=[m.repeat(frames, 1) for m in face],
                pixel_values_lip_mask=[m.repeat(frames, 1) for m in lip],
                width=self.RESOLUTION, height=self.RESOLUTION, video_length=frames,
                num_inference_steps=steps, guidance_scale=guidance,
                generator=generator_for(seed), motion_scale=[1.0, 1.0, 1.0]).videos
            video = videos[0].permute(1, 0, 2, 3).float()  # (F, C, H, W) in [0, 1]
            out.append(F.interpolate(video, size=xi.shape[-2:], mode="bilinear",
                                     antialias=True, align_corners=False).clamp(0, 1).cpu())
        return torch.stack(out)

    def denoising_loss(self, x: torch.Tensor, audio: Sequence[Audio], noise, timesteps,
                       noise_offset: float, audio_dropout: float, snr_gamma: float,
                       frames: int) -> torch.Tensor:
        from hallo.models.mutual_self_attention import ReferenceAttentionControl

        noise.begin()
        losses = []
        writer = ReferenceAttentionControl(self.net.reference_unet, do_classifier_free_guidance=False,
                                           mode="write", fusion_blocks="full")
        reader = ReferenceAttentionControl(self.net.denoising_unet, do_classifier_free_guidance=False,
                                           mode="read", fusion_blocks="full")
        low, high = timesteps
        for i, (xi, clip) in enumerate(zip(x, audio)):
            key = (content_key(xi.detach().float().cpu()), clip.key, frames)
            if key not in self._prepared:  # Hallo's preprocessing of the clean image, once
                with tempfile.TemporaryDirectory(prefix="bench-hallo-") as tmp:
                    prepared = self.prepare_image(xi.detach(), Path(tmp))
                    emb = self.audio_embedding(clip, max(frames, self.N_MOTION_FRAMES + 1),
                                               Path(tmp))
                self._prepared = {key: (prepared, emb)}
            (_, region, face_emb, full, face, lip), emb = self._prepared[key]
            pixels = self._to_hallo(xi[None])
            gen = noise.generators[i]
            with torch.no_grad():
                target_latent = self.vae.encode(pixels).latent_dist.sample(gen) * LATENT_SCALE
            target_latent = target_latent[:, :, None]  # (1, 4, 1, h, w)
            eps = torch.randn(target_latent.shape, generator=gen).to(target_latent) \
                + noise_offset * torch.randn((1, 4, 1, 1, 1), generator=gen).to(target_latent)
            t = (torch.randint(high - low, (1,), generator=gen) + low).to(self.device)
            z_t = self.train_scheduler.add_noise(target_latent, eps, t)
            target = self.train_scheduler.get_velocity(target_latent, eps, t)
            ref = torch.cat([pixels, torch.zeros_like(pixels).repeat(self.N_MOTION_FRAMES, 1, 1, 1)])
            ref_latents = self.vae.encode(ref).latent_dist.sample(gen) * LATENT_SCALE
            face_tokens = self.net.imageproj(
                torch.as_tensor(face_emb).reshape(1, -1).to(self.device, self.dtype))
            self.net.reference_unet(ref_latents, torch.zeros(len(ref_latents), device=self.device),
                                    encoder_hidden_states=face_tokens.repeat(len(ref_latents), 1, 1),
                                    return_dict=False)
            reader.update(writer)
            start = int(torch.randint(self.N_MOTION_FRAMES, len(emb), (1,), generator=gen))
            tokens = self.net.audioproj(emb[start:start + 1][None].to(self.device, self.dtype))
            if float(torch.rand((), generator=gen)) < audio_dropout:
                tokens = torch.zeros_like(tokens)
            mask_feature = self.net.face_locator(
                region[None, :, None].to(self.device, self.dtype))
            v = self.net.denoising_unet(
                z_t.to(self.dtype), t, mask_cond_fea=mask_feature,
                encoder_hidden_states=face_tokens, audio_embedding=tokens,
                full_mask=[m.to(self.device, self.dtype) for m in full],
                face_mask=[m.to(self.device, self.dtype) for m in face],
                lip_mask=[m.to(self.device, self.dtype) for m in lip]).sample
            weight = min_snr_weight(self.train_scheduler.alphas_cumprod, t, snr_gamma)
            losses.append((v.float() - target.float()).pow(2).mean() * weight[0])
            reader.clear()
            writer.clear()
        return torch.stack(losses)


def check_model(component: str, model: str, hallo_root: str | None, pretrained: str | None,
                dtype: str) -> None:
    """Refuse a bad back end before any compute (Hallo: its checkout and weight files)."""
    check(component, "model", model, model in BACKENDS,
          f"one of {BACKENDS} ({BACKENDS[0]}: random weights, plumbing only)")
    check(component, "dtype", dtype, dtype in DTYPES, f"one of {sorted(DTYPES)}")
    if model == "hallo":
        hallo_paths(hallo_root, pretrained, component)


def load_talking_head(model: str, device: torch.device, hallo_root: str | None = None,
                      pretrained: str | None = None, dtype: str = "fp32",
                      audio_separator: bool = True):
    """The back end named by `model`, loaded once per process (shared by generator and defense)."""
    if model == "tiny/talking-head":
        return shared(("talking-head", model, str(device)), lambda: TinyTalkingHead(device))
    from benchmark.models import DTYPES

    root, weights = hallo_paths(hallo_root, pretrained, "talking_head")
    return shared(("talking-head", model, str(root), str(weights), dtype, str(device)),
                  lambda: HalloTalkingHead(root, weights, DTYPES[dtype], device, audio_separator))
