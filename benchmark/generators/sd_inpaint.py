"""Stable Diffusion inpainting: repaint the face, or keep it and repaint the rest, or given masks.

Rombach, Blattmann, Lorenz, Esser, Ommer. "High-Resolution Image Synthesis with
Latent Diffusion Models." CVPR 2022 (the inpainting model: SD 1.5 fine-tuned with
a 9-channel UNet input, latent + mask + masked-image latent). Run through
diffusers' StableDiffusionInpaintPipeline, model
`stable-diffusion-v1-5/stable-diffusion-inpainting`.

Masks (white = repainted):
- `background` (default): keep the face, repaint the rest, the setting of
  PhotoGuard's inpainting demo and of DiffusionGuard (a person put into a new scene);
- `face`: repaint the face region;
- `file`: one mask image for every input (aligned face datasets), `mask_file`;
- `dataset`: one mask per image, given with the dataset (`dataset.masks`, see
  benchmark/data/base.py: same crop and resize as its image, binarised at 0.5).
  The mask belongs to the clean image and is used for every input made from it
  (x, x_adv, T(x_adv)), as an editor that annotated the original photo would.

The face box comes from dlib (benchmark/models/face_detection.py; HOG by default, the
CNN detector with `detector: cnn`), enlarged by `mask_margin` around its centre.
The detector runs on the image being edited, as a real editor would: a defense
or transformation that hides the face from the detector changes the mask too.
Where no face is found, the centre box of `no_face_box` (fraction of the side)
stands in, with a warning: the shipped portraits are cropped around the face.

Defaults: diffusers' inpainting defaults (strength 1.0, guidance 7.5, 50 steps of
the model's own scheduler), 512 px. The scene prompts in configs/generator/sd_inpaint.yaml
are bench's own.
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.errors import BenchError, check
from benchmark.generators.diffusion import DiffusionEditor
from benchmark.images import from_pil, read_image
from benchmark.models.face_detection import FaceDetector, face_box_masks

log = logging.getLogger(__name__)
MASKS = ("background", "face", "file", "dataset")


class SDInpaint(DiffusionEditor):
    name = "sd_inpaint"
    version = "2"  # noise drawn in float32 in every precision
    pipeline_class = "StableDiffusionInpaintPipeline"

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting",
                 prompts=("a photo of a person",), mask: str = "background",
                 mask_file: str | None = None, mask_margin: float = 1.3,
                 detector: str = "hog", no_face_box: float = 0.5, strength: float = 1.0,
                 steps: int = 50, guidance: float = 7.5, scheduler: str = "default", **kwargs):
        check(self.name, "mask", mask, mask in MASKS, f"one of {MASKS}")
        check(self.name, "mask_file", mask_file,
              mask != "file" or (isinstance(mask_file, str) and Path(mask_file).is_file()),
              "an existing image file when mask=file (white = repaint)")
        check(self.name, "mask_margin", mask_margin,
              isinstance(mask_margin, (int, float)) and 0.5 <= mask_margin <= 4,
              "a number in [0.5, 4] (box side as a multiple of the detected face box)")
        check(self.name, "no_face_box", no_face_box,
              isinstance(no_face_box, (int, float)) and 0 < no_face_box <= 1,
              "a number in (0, 1] (side of the centre box used where no face is found)")
        check(self.name, "strength", strength,
              isinstance(strength, (int, float)) and 0 < strength <= 1, "a number in (0, 1]")
        check(self.name, "steps", steps,
              isinstance(steps, int) and steps >= 1 and int(steps * strength) >= 1,
              f"an integer with int(steps * strength) >= 1 (strength={strength})")
        self.detector = FaceDetector(detector, component=self.name)
        super().__init__(model, prompts, steps, guidance, scheduler, **kwargs)
        self.mask, self.mask_margin, self.no_face_box = mask, float(mask_margin), no_face_box
        self.strength = float(strength)
        self.mask_image = from_pil(read_image(mask_file))[:1] if mask == "file" else None
        self.needs_masks = mask == "dataset"  # the runner then passes edit(..., masks=)

    def masks(self, x: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 1, H, W) in {0, 1}: 1 where the pipeline repaints.

        `given`: the dataset's masks for x (mask=dataset), resized to x's size if needed.
        """
        n, _, height, width = x.shape
        if self.mask == "file":
            return _fit(self.mask_image[None], height, width).expand(n, 1, height, width).clone()
        if self.mask == "dataset":
            if given is None or len(given) != n:
                raise BenchError(f"{self.name}: mask=dataset needs one mask per image from the "
                                 "dataset (set dataset.masks=/path/to/masks)")
            return _fit(given.float().cpu(), height, width)
        inside, missing = face_box_masks(self.detector, x, self.mask_margin, self.no_face_box)
        out = inside if self.mask == "face" else 1 - inside
        if missing:
            log.warning("%s: no face found in %d of %d image(s); used the centre box",
                        self.name, missing, n)
        return out

    def call_pipeline(self, pipe, x, seeds, common, masks=None):
        height, width = x.shape[-2:]
        return pipe(image=x, mask_image=self.masks(x, masks), strength=self.strength,
                    height=height, width=width, **common).images


def _fit(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, h, w) masks at (height, width), binarised at 0.5."""
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", antialias=True,
                          align_corners=False)
    return (m >= 0.5).float()
