"""Videos as film strips: how a talking-head generator's frames travel through a job.

A talking-head generator makes F frames per portrait. They travel as ONE image, the
frames side by side: (N, C, H, F * W). Why a strip and not a (N, F, C, H, W) tensor:
everything the runner does with an image (8-bit release, one PNG per cache entry,
the pairs, images.csv, `bench grid`, whose cell then shows the frames in order) stays
as it is for every generator, and only scoring has to know about frames.

Scoring: `per_frame(metrics, frames)` wraps each metric of a job whose generator makes
`frames` > 1 frames. For a pair of strips (G(T(x_adv)) vs G(x): the video of the
protected image against the video of the clean image, same audio and same noise)
the wrapper cuts both into frames and scores frame f against frame f; the image's
value is the mean over its frames. A frame without a value (NaN: ISM finds no face)
is left out of that mean; an image with no valid frame has no value (no row), as
for a single image. Set-level metrics (FID, KID) get every frame as one sample.
A metric with an embedder (ISM, FDFR) embeds each frame; those embeddings are
cached per strip as (F, ...) arrays under the embedder's config marked `per_frame`.
Images that are not strips (pairs fidelity and invisibility) are scored as before
(as one frame).

Frames are square (datasets make square images; talking-head generators keep the
input's size), so a strip of F frames is exactly F times as wide as high.
"""

import torch
from torch import nn

from benchmark.metrics.base import Metric


def tile(frames: torch.Tensor) -> torch.Tensor:
    """(N, F, C, H, W) frames -> (N, C, H, F * W) strip, frame 0 leftmost."""
    n, f, c, h, w = frames.shape
    return frames.permute(0, 2, 3, 1, 4).reshape(n, c, h, f * w)


def untile(strip: torch.Tensor, frames: int) -> torch.Tensor:
    """(N, C, H, F * W) strip -> (N, F, C, H, W) frames."""
    n, c, h, width = strip.shape
    return strip.reshape(n, c, h, frames, width // frames).permute(0, 3, 1, 2, 4)


def is_strip(x: torch.Tensor, frames: int) -> bool:
    return frames > 1 and x.dim() == 4 and x.shape[-1] == frames * x.shape[-2]


class FrameEmbedder(nn.Module):
    """An embedder applied to each frame: (N, F, ...) features; (N, 1, ...) for plain images."""

    def __init__(self, embedder: nn.Module, frames: int):
        super().__init__()
        self.embedder, self.frames = embedder, frames
        self.version = getattr(embedder, "version", "1")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not is_strip(images, self.frames):
            return self.embedder(images)[:, None]
        n = len(images)
        feats = self.embedder(untile(images, self.frames).flatten(0, 1))
        return feats.view(n, self.frames, *feats.shape[1:])


class PerFrameMetric(Metric):
    """`metric` scored frame by frame on strips, averaged per image (see the module docstring)."""

    def __init__(self, metric: Metric, frames: int):
        self.metric, self.frames = metric, frames
        for key in ("name", "version", "higher_is_better", "set_level", "relative_to",
                    "available", "unavailable_reason"):
            setattr(self, key, getattr(metric, key))
        if metric.embedder is not None:
            self.embedder = FrameEmbedder(metric.embedder, frames)
            self.embedder_config = {"per_frame": True, "embedder": metric.embedder_config}

    def reset(self) -> None:
        self.metric.reset()

    def compute(self) -> float | None:
        return self.metric.compute()

    def update(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
        n = len(a)
        if self.embedder is not None:  # (N, F, ...) from FrameEmbedder
            frames = a.shape[1]
            a, b = a.flatten(0, 1), b.flatten(0, 1)
        elif is_strip(a, self.frames):
            frames = self.frames
            a, b = untile(a, frames).flatten(0, 1), untile(b, frames).flatten(0, 1)
        else:
            return self.metric.update(a, b)
        values = self.metric.update(a, b)
        if values is None:
            return None
        return values.view(n, frames).nanmean(dim=1)


def per_frame(metrics: dict[str, Metric], frames: int) -> dict[str, Metric]:
    """The job's metrics, frame-aware when its generator makes videos (frames > 1)."""
    if frames <= 1:
        return metrics
    return {name: PerFrameMetric(metric, frames) for name, metric in metrics.items()}
