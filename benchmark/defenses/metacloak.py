"""MetaCloak: perturbations learnt over a pool of DreamBooth surrogates and through blur and flips.

Liu, Fan, Dai, Chen, Zhou, Sun. "MetaCloak: Preventing Unauthorized Subject-driven
Text-to-image Diffusion-based Synthesis via Meta-learning." CVPR 2024 (oral). arXiv:2311.13127.

Like Anti-DreamBooth's ASPL (benchmark.defenses.anti_dreambooth; the shared surrogate is in
benchmark.defenses.dreambooth_surrogate), it maximises the denoising
loss of DreamBooth-fine-tuned surrogates with L-inf sign-step PGD (no random start), prompt
"a photo of sks person", but (robust_facecloak/attacks/algs/metacloak.py, read at 67bcf70, not
copied):

1. The surrogate pool (:541-568): one DreamBooth run of `train_steps` steps on the clean images
   being protected, its state kept before step 0 and before every step s with
   (s + 1) % interval == 0 (train_few_step's `step_wise_save`, :94-101): at the reference's
   1000 steps and interval 200, the states after 0, 199, 399, 599, 799 and 999 steps (six
   surrogates; the finished 1000-step model is not one of them).
2. `trials` times over the pool, in that order (:575-599): load the surrogate's state, then
   interval // advance_steps times (100 at the reference's values): `pgd_steps` PGD steps on
   the perturbation with it, continuing from the last, clipped around the clean images
   (RobustPGDAttacker.perturb, robust_pgd_worker.py:181-259), then `advance_steps` DreamBooth
   steps of the surrogate on the perturbed images (train_few_step, a new AdamW each call), so
   the perturbation follows each surrogate along its own training (the "unrolling"). At the
   reference's values: 4 x 6 x 100 = 2400 PGD calls of 6 steps, 14400 gradients.
3. Expectation over transformation (:467-488, robust_pgd_worker.py:232-241): each PGD step's
   gradient is taken through a random transform of the perturbed images: a Gaussian blur with
   kernel 7 and sigma ~ U[0.1, 2.0] (torchvision's GaussianBlur default, :473, with
   `--transform_gau --gau_kernel_size 7`), then a horizontal flip with probability 0.5 (:476-477,
   `--transform_hflip`), `eot_samples` (defense_sample_num, 1) draws per step. The denoising
   loss of the transformed images is what is maximised (certi, robust_pgd_worker.py:40-98).

Reference values (liuyixin-louis/MetaCloak at 67bcf70): budget r = 11 and step r / 10 = 1.1 in
0-255 units (script/gen_and_eval.sh:15, :41; script/sub/gen/metacloak.sh:46-48 with the
defender's x_range [0, 255], metacloak.py:502-513), 6 PGD steps (metacloak.sh:48); trials 4,
interval 200, 1000 pool steps, advance steps 2, one EOT sample (script/methods_config.sh:5-10);
learning rate 5e-7, batch 1 instance + 1 class image, prior preservation weight 1.0, text
encoder trained, 200 class images of "a photo of person" (metacloak.sh:33-45); AdamW
betas (0.9, 0.999), weight decay 1e-2, eps 1e-8 (metacloak.py:63-69); no gradient clipping in
effect (its clip_grad_norm_ at :159 is given the itertools.chain that AdamW consumed at :61-69);
SD 2.1 base (gen_and_eval.sh:10-12), 512 px, seed 0. Reference precision: the PGD runs its
networks and x in fp16 (`--mixed_precision=fp16`, robust_pgd_worker.py:184-196); its
fine-tuning casts them to bf16 (metacloak.py:81-86).

Deliberate deviations:

- The reference's fine-tuning feeds the instance images to the VAE in 0-255 (load_data keeps
  0-255 floats, generic/data_utils.py:27-45, and DreamBoothDatasetFromTensor passes the tensor
  through untouched, model/db_train.py:60-62, :91-92, while the class images are normalised to
  [-1, 1], :77-84): its surrogates train on images 127.5 times outside the VAE's range. Here
  every image the surrogates train on is in the VAE's [-1, 1].
- The inner "attacker" (PGDAttacker, an adversarial-training step on the transformed images) is
  not run: the scripts give it radius 0 (metacloak.sh:51), for which it returns its input
  (pgd_worker.py:7, :66-68). `--unroll_steps 1` is passed (metacloak.sh:25) but never read.
- The transform is drawn per image (sigma and flip), from the image's seed and the PGD call's
  index; torchvision's draws one sigma and one flip for the whole batch from the global RNG.
  Blur and flip commute (symmetric kernel, reflect padding), so their order does not matter.
- The reference saves the result with a truncating uint8 cast (metacloak.py:537); bench's
  release rounds.
- The pool is held in CPU memory as float32 vectors of the UNet's and text encoder's weights
  (for SD 2.1 base about 4.8 GB per surrogate, 29 GB for six; the reference keeps bf16 state
  dicts, half that).
- As ASPL here: the set is perturbed jointly (the batch is one identity; the conformance
  suite's `batch` contract is exempt), class images come from `class_data_dir` (null: no prior
  preservation, said in the notice), the fine-tuning draws its images in a seeded random order
  (the reference shuffles with the global RNG, db_train.py:61-62).

At the tiny scale (configs/defense/scale/tiny_metacloak.yaml) the pool is two surrogates (the
states after 0 and 1 steps: train_steps 2, interval 1), one trial, one PGD call of 2 steps and
one fine-tuning step per surrogate: plumbing, not protection.
"""

from collections.abc import Sequence

import torch

from benchmark.defenses.dreambooth_surrogate import DreamBoothSurrogate
from benchmark.defenses.pgd import LinfPGD
from benchmark.defenses.precision import ReferencePrecision
from benchmark.errors import check
from benchmark.images import derive_seed, generator_for
from benchmark.models.dreambooth import FineTuning, Personalised
from benchmark.models.sd_ops import NoiseStreams


def snapshot_steps(train_steps: int, interval: int) -> list[int]:
    """How many steps each surrogate of the pool has trained (metacloak.py:94-101: the state
    before step 0 and before each step s with (s + 1) % interval == 0)."""
    return sorted({0} | {s for s in range(train_steps) if (s + 1) % interval == 0})


class BlurFlip:
    """MetaCloak's EOT: a Gaussian blur (odd kernel `kernel`, sigma ~ U[sigma]) then a
    horizontal flip with probability `hflip`, drawn per image from its seed and `call` (the
    index of the PGD call, which MetaCloak sets before each). Differentiable."""

    differentiable = True
    name = "metacloak_eot"

    def __init__(self, kernel: int, sigma: Sequence[float], hflip: float):
        self.kernel, self.sigma, self.hflip = kernel, (float(sigma[0]), float(sigma[1])), hflip
        self.call = 0

    def __call__(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        low, high = self.sigma
        draws = [torch.rand(2, generator=generator_for(derive_seed(s, str(self.call), self.name)))
                 for s in seeds]
        if self.kernel > 1:
            sigma = torch.tensor([[low + (high - low) * float(d[0])] * 2 for d in draws]).to(x)
            x = gaussian_blur2d(x, (self.kernel, self.kernel), sigma, border_type="reflect")
        flip = torch.tensor([float(d[1]) < self.hflip for d in draws], device=x.device)
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


class MetaCloak(DreamBoothSurrogate):
    name = "metacloak"
    # robust_pgd_worker.py:184-196: the attacked networks and x cast to fp16 (the scripts'
    # --mixed_precision=fp16); the fine-tuning's bf16 (metacloak.py:81) is not modelled
    reference_precision = ReferencePrecision("fp16")

    def __init__(self, model: str = "stabilityai/stable-diffusion-2-1-base",
                 eps: float = 11.0, step: float = 1.1, pgd_steps: int = 6, trials: int = 4,
                 train_steps: int = 1000, interval: int = 200, advance_steps: int = 2,
                 eot_samples: int = 1, blur_kernel: int = 7,
                 blur_sigma: Sequence[float] = (0.1, 2.0), hflip: float = 0.5,
                 learning_rate: float = 5e-7, instance_prompt: str = "a photo of sks person",
                 class_prompt: str = "a photo of person", class_data_dir: str | None = None,
                 num_class_images: int = 200, prior_loss_weight: float = 1.0,
                 train_text_encoder: bool = True, dtype: str = "fp32",
                 precision: str = "fp32", device: str = "auto"):
        for key, value, low in (("trials", trials, 0), ("train_steps", train_steps, 0),
                                ("interval", interval, 1), ("advance_steps", advance_steps, 1),
                                ("eot_samples", eot_samples, 1)):
            check(self.name, key, value,
                  isinstance(value, int) and not isinstance(value, bool) and value >= low,
                  f"an integer >= {low}")
        check(self.name, "advance_steps", advance_steps, advance_steps <= interval,
              f"at most interval={interval} (interval // advance_steps PGD calls per surrogate)")
        check(self.name, "blur_kernel", blur_kernel,
              isinstance(blur_kernel, int) and blur_kernel >= 1 and blur_kernel % 2 == 1,
              "an odd kernel size >= 1 (1: no blur)")
        check(self.name, "blur_sigma", blur_sigma,
              isinstance(blur_sigma, Sequence) and len(blur_sigma) == 2
              and all(isinstance(v, (int, float)) for v in blur_sigma)
              and 0 < blur_sigma[0] <= blur_sigma[1], "[low, high] with 0 < low <= high")
        check(self.name, "hflip", hflip, isinstance(hflip, (int, float)) and 0 <= hflip <= 1,
              "a probability in [0, 1]")
        self.trials, self.interval, self.advance_steps = trials, interval, advance_steps
        self.pool_steps = snapshot_steps(train_steps, interval)
        tuning = FineTuning(advance_steps, learning_rate, 1, prior_loss_weight,
                            train_text_encoder, None, instance_prompt=instance_prompt,
                            class_prompt=class_prompt)
        self._setup(model, eps, step, pgd_steps, tuning, class_data_dir, num_class_images,
                    dtype, precision, device)
        self.eot = BlurFlip(blur_kernel, blur_sigma, hflip)
        self.pgd = LinfPGD(eps, step, pgd_steps, random_start=False, grad_samples=eot_samples,
                           transforms=[self.eot], component=self.name)

    def pool(self, x: torch.Tensor, generator: torch.Generator,
             classes: torch.Tensor | None) -> tuple[Personalised, list]:
        """The surrogates: states of one DreamBooth run on the clean images."""
        model = Personalised(self.parts, self.tuning.train_text_encoder)
        states = {}

        def keep(done: int) -> None:
            if done in self.pool_steps:
                states[done] = model.state()

        run = FineTuning(self.pool_steps[-1], self.tuning.learning_rate, 1,
                         self.tuning.prior_loss_weight, self.tuning.train_text_encoder, None,
                         instance_prompt=self.tuning.instance_prompt,
                         class_prompt=self.tuning.class_prompt)
        model.finetune(x, run, generator, classes, done=keep)
        return model, [states[s] for s in self.pool_steps]

    def protect(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        x = x.to(self.device).float()
        classes = self.class_images(x)
        generator = self._set_generator(seeds, self.name)
        noise = NoiseStreams(seeds, self.device, self.name)
        model, states = self.pool(x, generator, classes)
        x_adv, call = x.clone(), 0
        for _ in range(self.trials):
            for state in states:
                surrogate = model.copy().load_state(state)
                for _ in range(self.interval // self.advance_steps):
                    self.eot.call = call
                    call += 1
                    x_adv = self._attack(surrogate, x, seeds, noise, start=x_adv)
                    surrogate = surrogate.copy()  # the attacked one stays self.surrogate
                    surrogate.finetune(x_adv, self.tuning, generator, classes)
        return x_adv
