"""Talking head: the portrait, animated by its audio clip into a short video.

The editor Silencer (Gan et al., "Silence is Golden: Leveraging Adversarial Examples to
Nullify Audio Control in LDM-based Talking-Head Generation", CVPR 2025) protects against,
and the one the study (Sun et al. 2026, arXiv 2604.23688) uses for Silencer-I's row: Hallo
(Xu et al. 2024, arXiv:2406.08801, fudan-generative-vision/hallo). `model: hallo` runs a
user's local Hallo checkout and weights (`hallo_root`, `pretrained`); `model:
tiny/talking-head` is a RANDOM-weight audio-conditioned latent denoiser with the same
interface (benchmark.models.talking_head, where every value taken from Hallo is listed).

`edit(x, seeds, audio=clips)` returns the `frames` frames as one film strip, (N, C, H,
frames * W), so that the runner releases, caches and shows it like any edit; the metrics
of a job with this generator score it frame by frame (benchmark.video). Each image's
clip comes from `dataset.audio` (`needs_audio`): one file for all, or one per image.
Paired noise: each video's initial latents are drawn from the clean image's seed, so
G(x) and G(T(x_adv)) of one subject share noise and audio and differ by the input alone.

Defaults are Hallo's inference defaults (configs/inference/default.yaml): 16 frames (its
`n_sample_frames`, one clip), 40 DDIM steps, guidance 3.5.
"""

from collections.abc import Sequence

import torch

from benchmark.errors import BenchError, check
from benchmark.generators.base import Generator
from benchmark.models import resolve_device
from benchmark.models.talking_head import check_model, load_talking_head
from benchmark.video import tile


class TalkingHeadGenerator(Generator):
    name = "talking_head"
    version = "1"
    needs_audio = True  # edit() takes audio=, each image's clip from dataset.audio

    def __init__(self, model: str = "hallo", hallo_root: str | None = None,
                 pretrained: str | None = None, frames: int = 16, steps: int = 40,
                 guidance: float = 3.5, audio_separator: bool = True, dtype: str = "fp16",
                 device: str = "auto", max_batch: int = 1):
        check(self.name, "frames", frames, isinstance(frames, int) and frames >= 1,
              "an integer >= 1 (video frames at 25 fps)")
        check(self.name, "steps", steps, isinstance(steps, int) and steps >= 1, "an integer >= 1")
        check(self.name, "guidance", guidance,
              isinstance(guidance, (int, float)) and guidance >= 0, "a number >= 0")
        check(self.name, "audio_separator", audio_separator, isinstance(audio_separator, bool),
              "true or false (Hallo's vocal separation before wav2vec)")
        check(self.name, "max_batch", max_batch, isinstance(max_batch, int) and max_batch >= 1,
              "an integer >= 1")
        check_model(self.name, model, hallo_root, pretrained, dtype)
        self.model, self.hallo_root, self.pretrained = model, hallo_root, pretrained
        self.frames, self.steps, self.guidance = frames, steps, float(guidance)
        self.audio_separator, self.dtype, self.max_batch = audio_separator, dtype, max_batch
        self.device = resolve_device(device)

    @property
    def backend(self):
        return load_talking_head(self.model, self.device, self.hallo_root, self.pretrained,
                                 self.dtype, self.audio_separator)

    def edit(self, x: torch.Tensor, seeds: Sequence[int], audio: Sequence | None = None
             ) -> torch.Tensor:
        if audio is None:
            raise BenchError(f"{self.name}: no audio; set dataset.audio (a .wav for every "
                             f"image, a folder of <stem>.wav, or 'sample')")
        if not len(x) == len(seeds) == len(audio):
            raise BenchError(f"{self.name}: {len(x)} images, {len(seeds)} seeds, "
                             f"{len(audio)} audio clips")
        out = []
        for start in range(0, len(x), self.max_batch):
            part = slice(start, start + self.max_batch)
            out.append(self.backend.generate(x[part].float(), list(audio[part]),
                                             list(seeds[part]), self.frames, self.steps,
                                             self.guidance))
        return tile(torch.cat(out))
