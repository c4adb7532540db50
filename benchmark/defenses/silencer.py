"""Silencer-I: make a talking-head model's denoiser ignore the audio of a protected portrait.

Gan, Miao, Wang, Yang. "Silence is Golden: Leveraging Adversarial Examples to Nullify Audio
Control in LDM-based Talking-Head Generation." CVPR 2025. Code: yuangan/Silencer, stage I
(Silencer-I/protect/protect_hallo.py with attack.mode=hallo, attack.g_mode=-). The study
(Sun et al. 2026, arXiv 2604.23688) reports its image-purification SSIM 0.8671 under TIP-RSR.

    min_{||x_adv - x||_inf <= eps}  w(t) ||v_theta(z_t, t | ref = E(x_adv), audio) - v_t||^2
    z_t, v_t from a VAE sample of x_adv (no gradient), t ~ U[200, 300), w = min-SNR weight

Minimising the audio-conditioned denoising loss of a low-noise step (the "nullifying
loss") makes the reference image explain the frame by itself, so the audio loses its
control over the generated video (the paper's reading of its stage I).

Values from the reference (all in Silencer-I/protect/):
- protect_hallo.sh / README "used in paper": mode hallo, g_mode "-", min_timesteps;
  configs/attack/base.yaml: epsilon, steps, alpha, input_size 512 (values and lines:
  configs/defense/silencer_i.yaml's card).
- protect_hallo.py `init`: epsilon and alpha are 0-255 units converted to [-1, 1]
  (x 2/255), i.e. the same numbers out of 255 on [0, 1] images; `HalloNet.__init__`:
  max_timesteps = min_timesteps + the span.
- attacks.py `Linf_PGD_Hallo.pgd_sds_hallo`: uniform random start in [-eps, eps], the first
  gradient taken at the unclipped x + delta_0 (`clip_start: false`); step size
  decayed linearly from alpha to alpha/100 over the iterations (PGD `schedule: linear`,
  `final_step_fraction: 0.01`); sign steps; the loss is -g_dir * loss and the update adds
  g_dir * sign(grad), so g_mode "-" DESCENDS the denoising loss; projection onto the eps box
  and [-1, 1] after each step.
- the loss (`HalloNet.forward`) and Hallo's modules it differentiates: see
  benchmark.models.talking_head (VAE encoder, reference UNet, reference attention, denoising
  UNet with audio attention; noise offset 0.05, audio dropped with probability 0.05, min-SNR
  weight with gamma 5, one frame of audio).

Differences, by design:
- The audio is each image's `dataset.audio` clip; the reference drives every image with one
  precomputed wav2vec embedding (th1kh/th1kh_tmp/audio_emb/0001.pt). `dataset.audio=FILE`
  gives every image one clip, as there.
- Random draws (t, noise, audio frame, dropout, VAE samples) come from per-image seeded
  streams, so a protection is reproducible.
- `model: tiny/talking-head` attacks the random-weight stand-in (no Hallo offline); there
  the portrait enters the denoiser by channel concatenation, not a reference UNet.

Reference model: Hallo (fudan-generative-ai/hallo, its pretrained_models). Reference
precision: fp16 weights (protect_hallo.py loads Hallo's networks in its config's
weight_dtype, fp16), which `dtype: fp16` runs.
"""

from collections.abc import Sequence

import torch

from benchmark.defenses.base import Defense
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.precision import ReferencePrecision
from benchmark.errors import BenchError, check
from benchmark.models import resolve_device
from benchmark.models.sd_ops import NoiseStreams
from benchmark.models.talking_head import check_model, load_talking_head


class SilencerI(Defense):
    name = "silencer_i"
    version = "2"  # 2: the first gradient at the unclipped random start (clip_start)
    reference_precision = ReferencePrecision("fp16")
    needs_audio = True  # protect() takes audio=, each image's clip from dataset.audio

    def __init__(self, model: str = "hallo", hallo_root: str | None = None,
                 pretrained: str | None = None, eps: float = 16.0, step: float = 1.0,
                 iterations: int = 100, random_start: bool = True,
                 final_step_fraction: float = 0.01, min_timestep: int = 200,
                 timestep_span: int = 100, noise_offset: float = 0.05,
                 audio_dropout: float = 0.05, snr_gamma: float = 5.0, frames: int = 16,
                 audio_separator: bool = True, dtype: str = "fp16", device: str = "auto",
                 clip_start: bool = False):
        self.pgd = LinfPGD(eps, step, iterations, random_start, schedule="linear",
                           final_step_fraction=final_step_fraction, component=self.name,
                           clip_start=clip_start)
        check(self.name, "min_timestep", min_timestep,
              isinstance(min_timestep, int) and 0 <= min_timestep < 1000,
              "an integer in [0, 1000) (first diffusion step of the attacked range)")
        check(self.name, "timestep_span", timestep_span,
              isinstance(timestep_span, int) and 1 <= timestep_span <= 1000 - min_timestep,
              f"an integer in [1, {1000 - min_timestep}] (t is drawn from [min_timestep, "
              f"min_timestep + timestep_span))")
        check(self.name, "noise_offset", noise_offset,
              isinstance(noise_offset, (int, float)) and noise_offset >= 0, "a number >= 0")
        check(self.name, "audio_dropout", audio_dropout,
              isinstance(audio_dropout, (int, float)) and 0 <= audio_dropout <= 1,
              "a probability in [0, 1]")
        check(self.name, "snr_gamma", snr_gamma,
              isinstance(snr_gamma, (int, float)) and snr_gamma > 0, "a number > 0")
        check(self.name, "frames", frames, isinstance(frames, int) and frames >= 1,
              "an integer >= 1 (video frames of audio the attack draws one from)")
        check(self.name, "audio_separator", audio_separator, isinstance(audio_separator, bool),
              "true or false")
        check_model(self.name, model, hallo_root, pretrained, dtype)
        self.model, self.hallo_root, self.pretrained = model, hallo_root, pretrained
        self.timesteps = (min_timestep, min_timestep + timestep_span)
        self.noise_offset, self.audio_dropout = float(noise_offset), float(audio_dropout)
        self.snr_gamma, self.frames = float(snr_gamma), frames
        self.audio_separator, self.dtype = audio_separator, dtype
        self.device = resolve_device(device)

    @property
    def backend(self):
        return load_talking_head(self.model, self.device, self.hallo_root, self.pretrained,
                                 self.dtype, self.audio_separator)

    def objective(self, x: torch.Tensor, audio: Sequence, noise: NoiseStreams) -> torch.Tensor:
        """The denoising loss Silencer-I descends, per image (one draw of its randomness)."""
        return self.backend.denoising_loss(x, audio, noise, self.timesteps, self.noise_offset,
                                           self.audio_dropout, self.snr_gamma, self.frames)

    def protect(self, x: torch.Tensor, seeds: Sequence[int], audio: Sequence | None = None
                ) -> torch.Tensor:
        if audio is None or len(audio) != len(x):
            raise BenchError(f"{self.name}: needs one audio clip per image (dataset.audio)")
        x = x.to(self.device)
        noise = NoiseStreams(seeds, self.device, self.name)
        return self.pgd.minimize(x, lambda v: self.objective(v, audio, noise), seeds)
