"""Anti-DreamBooth: ASPL and FSMG, perturbations that make DreamBooth learn a broken subject.

Van Le, Phung, Nguyen, Dao, Tran, Tran. "Anti-DreamBooth: Protecting users from personalized
text-to-image synthesis." ICCV 2023. arXiv:2303.15433.

Both maximise the denoising loss of a DreamBooth-fine-tuned surrogate on the protected images
with L-inf PGD (sign steps, no random start), the prompt "a photo of sks person":

    max_{||x_adv - x||_inf <= eps}  E_{t, eps} ||eps_theta'(z_t(x_adv), t, c) - eps||^2

- FSMG (Fully-trained Surrogate Model Guidance): theta' is DreamBooth fine-tuned on clean
  photos of the subject once (1000 steps, scripts/attack_with_fsmg.sh's first call), then 100
  PGD steps on it (attacks/fsmg.py:551-622: `--max_train_steps=100`).
- ASPL (Alternating Surrogate and Perturbation Learning, attacks/aspl.py:727-767): 50 rounds
  (`--max_train_steps=50`) of: copy the current model f, fine-tune the copy 3 steps on the clean
  photos (`--max_f_train_steps=3`), 6 PGD steps on the perturbed photos with the copy
  (`--max_adv_train_steps=6`), each round continuing from the last round's perturbation,
  then fine-tune f itself 3 steps on the perturbed photos.

Reference values (VinAIResearch/Anti-DreamBooth at c97e891): eps 0.05 and step 0.005 in
[-1, 1] units (scripts/attack_with_aspl.sh, attack_with_fsmg.sh: `--pgd_eps=5e-2
--pgd_alpha=5e-3`), i.e. 6.375/255 and 0.6375/255 here; the update x + alpha * sign(grad),
clipped to the eps box and the image range (attacks/aspl.py:568-573, attacks/fsmg.py:619-622);
one timestep t ~ U[0, T) and noise per image per step, z a sample of the VAE posterior
(aspl.py:518-549); the surrogate's fine-tuning: AdamW lr 5e-7, weight decay 1e-2, a new
optimizer per call (aspl.py:389-395), one instance and one class image per step with prior
preservation weight 1.0 (aspl.py:414-467), UNet and text encoder trained
(`--train_text_encoder`), no gradient clipping in ASPL's inner fine-tuning (its
clip_grad_norm_ at aspl.py:470 is given the itertools.chain that AdamW's constructor consumed at
:387-395, so it clips nothing); FSMG's surrogate is
a full DreamBooth run (batch 2, gradient norm 1.0; benchmark.models.dreambooth). Model: SD 2.1
base (`MODEL_PATH=./stable-diffusion/stable-diffusion-2-1-base`), 512 px; 200 class images of
"a photo of person". Reference precision: bf16 (aspl.py:401, 511: `weight_dtype =
torch.bfloat16`); here the weights' `dtype` and `precision` as for the other diffusion defenses.

Differences, to state with the numbers: the reference fine-tunes its surrogates on a disjoint
clean set of the same subject (set A) and perturbs another (set B); here both are the clean
images being protected (the batch; one identity per job, as generator=dreambooth batches it).
The set is perturbed jointly, so an image's protection depends on its batch (the conformance
suite's `batch` contract is exempt). Class images come from `class_data_dir` (null: prior
preservation off, said in the notice); the reference samples them with the base model.
ASPL's inner fine-tuning draws its images in a seeded random order (the reference cycles
through the folder in file order; and it indexes the instance and class images with
`step % max(n_instance, n_class)` first, which differs from bench's `step % n` only after that
many steps within one call, never at the reference's 3 steps and 200 class images).

tests/test_dreambooth.py checks ASPL's loop against a re-statement of aspl.py's, written from
reading it, on the tiny model (2 rounds of 2 fine-tuning and 2 PGD steps, prior preservation
on): the same perturbation to 3e-8 (float32 rounding of [0, 1] against [-1, 1] units); it fails
with a round's fine-tuning and PGD swapped, or with f fine-tuned on the clean images.
"""

from collections.abc import Sequence

import torch

from benchmark.defenses.dreambooth_surrogate import DreamBoothSurrogate
from benchmark.defenses.precision import ReferencePrecision
from benchmark.errors import check
from benchmark.models.dreambooth import FineTuning, Personalised
from benchmark.models.sd_ops import NoiseStreams

EPS = 6.375  # 0.05 in [-1, 1]
STEP = 0.6375  # 0.005 in [-1, 1]


class AntiDreamBooth(DreamBoothSurrogate):
    """ASPL and FSMG: the surrogate's objective and class images, at Anti-DreamBooth's values."""

    name = "anti_dreambooth"
    # aspl.py:401-412, fsmg.py: the VAE, UNet and text encoder cast to bf16, no autocast
    reference_precision = ReferencePrecision("bf16")


class ASPL(AntiDreamBooth):
    name = "aspl"

    def __init__(self, model: str = "stabilityai/stable-diffusion-2-1-base",
                 eps: float = EPS, step: float = STEP, rounds: int = 50,
                 surrogate_steps: int = 3, pgd_steps: int = 6, learning_rate: float = 5e-7,
                 instance_prompt: str = "a photo of sks person",
                 class_prompt: str = "a photo of person", class_data_dir: str | None = None,
                 num_class_images: int = 200, prior_loss_weight: float = 1.0,
                 train_text_encoder: bool = True, dtype: str = "fp32",
                 precision: str = "fp32", device: str = "auto"):
        check(self.name, "rounds", rounds, isinstance(rounds, int) and rounds >= 0,
              "an integer >= 0")
        self.rounds = rounds
        tuning = FineTuning(surrogate_steps, learning_rate, 1, prior_loss_weight,
                            train_text_encoder, None, instance_prompt=instance_prompt,
                            class_prompt=class_prompt)
        self._setup(model, eps, step, pgd_steps, tuning, class_data_dir, num_class_images,
                    dtype, precision, device)

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        x = x.to(self.device).float()
        model = Personalised(self.parts, self.tuning.train_text_encoder)
        classes = self.class_images(x)
        generator = self._set_generator(seeds, self.name)
        noise = NoiseStreams(seeds, self.device, self.name)
        x_adv = x.clone()
        for _ in range(self.rounds):
            surrogate = model.copy()
            surrogate.finetune(x, self.tuning, generator, classes)
            x_adv = self._attack(surrogate, x, seeds, noise, start=x_adv)
            model.finetune(x_adv, self.tuning, generator, classes)
        return x_adv


class FSMG(AntiDreamBooth):
    name = "fsmg"

    def __init__(self, model: str = "stabilityai/stable-diffusion-2-1-base",
                 eps: float = EPS, step: float = STEP, iterations: int = 100,
                 surrogate_steps: int = 1000, surrogate_batch: int = 2,
                 learning_rate: float = 5e-7, instance_prompt: str = "a photo of sks person",
                 class_prompt: str = "a photo of person", class_data_dir: str | None = None,
                 num_class_images: int = 200, prior_loss_weight: float = 1.0,
                 train_text_encoder: bool = True, max_grad_norm: float | None = 1.0,
                 dtype: str = "fp32", precision: str = "fp32", device: str = "auto"):
        tuning = FineTuning(surrogate_steps, learning_rate, surrogate_batch, prior_loss_weight,
                            train_text_encoder, max_grad_norm, instance_prompt=instance_prompt,
                            class_prompt=class_prompt)
        self._setup(model, eps, step, iterations, tuning, class_data_dir, num_class_images,
                    dtype, precision, device)

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        x = x.to(self.device).float()
        model = Personalised(self.parts, self.tuning.train_text_encoder)
        model.finetune(x, self.tuning, self._set_generator(seeds, self.name),
                       self.class_images(x))
        return self._attack(model, x, seeds, NoiseStreams(seeds, self.device, self.name))
