"""JPEG at the quality factors of online social networks, drawn per image (DF-RAP).

Qu et al., "DF-RAP: A Robust Adversarial Perturbation for Defending against
Deepfakes in Real-world Social Network Scenarios", IEEE TIFS 2024. Its public code (ZOMIN28/DF_RAP, data/qf.txt) lists the
JPEG quality factors measured on images passed through social networks (71..100)
and how often each occurs; each image draws one of them, seeded by its seed,
then goes through Pillow's libjpeg at that quality (4:2:0, as the platforms send).

Strength: the drawn quality q moves to 100 - strength * (100 - q), so strength 1
(the default, null) is DF-RAP's draw and smaller strengths compress more gently.
"""

import numpy as np
from PIL import Image

from benchmark.errors import check
from benchmark.transforms.base import PillowTransform, check_choice
from benchmark.transforms.jpeg import SUBSAMPLING, jpeg_round_trip

DFRAP_QUALITIES = (71, 72, 75, 78, 79, 80, 84, 85, 86, 88, 89, 90, 91, 92, 100)
DFRAP_FREQUENCIES = (0.0132, 0.0268, 0.0127, 0.0573, 0.0156, 0.2213, 0.0107, 0.2193, 0.0110,
                     0.0107, 0.0120, 0.0120, 0.0171, 0.2272, 0.1331)


class SocialJpeg(PillowTransform):
    name = "jpeg_social"
    random = True

    def __init__(self, qualities: list[int] = DFRAP_QUALITIES,
                 frequencies: list[float] | None = DFRAP_FREQUENCIES,
                 subsampling: str = "4:2:0", strength: float | None = None):
        self._strength(strength)
        qualities = list(qualities)
        check(self.name, "qualities", qualities,
              len(qualities) > 0 and all(isinstance(q, int) and 1 <= q <= 100 for q in qualities),
              "a non-empty list of integers in 1..100")
        if frequencies is not None:
            frequencies = [float(f) for f in frequencies]
            check(self.name, "frequencies", frequencies,
                  len(frequencies) == len(qualities) and all(f >= 0 for f in frequencies)
                  and sum(frequencies) > 0,
                  f"null (uniform) or {len(qualities)} non-negative numbers, one per quality")
            total = sum(frequencies)
            frequencies = [f / total for f in frequencies]
        self.qualities = qualities
        self.frequencies = frequencies
        self.subsampling = check_choice(self.name, "subsampling", subsampling, SUBSAMPLING)

    def quality_for(self, seed: int) -> int:
        drawn = int(np.random.default_rng(seed).choice(self.qualities, p=self.frequencies))
        if self.strength is None:
            return drawn
        return max(1, round(100 - self.strength * (100 - drawn)))

    def apply(self, img: Image.Image, seed: int) -> Image.Image:
        return jpeg_round_trip(img, self.quality_for(seed), self.subsampling)
