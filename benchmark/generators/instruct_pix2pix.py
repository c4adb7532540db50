"""InstructPix2Pix: edit an image by a written instruction.

Brooks, Holynski, Efros. "InstructPix2Pix: Learning to Follow Image Editing
Instructions." CVPR 2023. arXiv:2211.09800. Model `timbrooks/instruct-pix2pix`
through diffusers' StableDiffusionInstructPix2PixPipeline.

Defaults from FaceLock's editing script (taco-group/FaceLock, `main_edit.py`):
50 steps of Euler ancestral, text guidance 7.5, image guidance 1.5, and its 25
portrait-editing instructions (configs/generator/instruct_pix2pix.yaml, verbatim,
spelling included, so that results compare with FaceLock's). Wang et al.,
"Edit Away and My Face Will not Stay: Personal Biometric Defense against
Malicious Generative Editing", arXiv:2411.16832. Images are edited at 512 px.
"""

from benchmark.errors import check
from benchmark.generators.diffusion import DiffusionEditor


class InstructPix2Pix(DiffusionEditor):
    name = "instruct_pix2pix"
    version = "2"  # noise drawn in float32 in every precision
    pipeline_class = "StableDiffusionInstructPix2PixPipeline"
    prompts_key = "instructions"

    def __init__(self, model: str = "timbrooks/instruct-pix2pix",
                 instructions=("Let the person wear sunglasses",), steps: int = 50,
                 guidance: float = 7.5, image_guidance: float = 1.5,
                 scheduler: str = "euler_a", **kwargs):
        check(self.name, "image_guidance", image_guidance,
              isinstance(image_guidance, (int, float)) and image_guidance >= 0, "a number >= 0")
        super().__init__(model, instructions, steps, guidance, scheduler, **kwargs)
        self.image_guidance = float(image_guidance)

    def call_pipeline(self, pipe, x, seeds, common):
        return pipe(image=x, image_guidance_scale=self.image_guidance, **common).images
