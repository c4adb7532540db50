"""SDEdit / Stable Diffusion img2img: noise the input part-way, then denoise it toward a prompt.

Meng, He, Song, Song, Wu, Zhu, Ermon. "SDEdit: Guided Image Synthesis and Editing
with Stochastic Differential Equations." ICLR 2022. arXiv:2108.01073. Run with
Stable Diffusion 1.5 (Rombach et al., CVPR 2022) through diffusers'
StableDiffusionImg2ImgPipeline.

Defaults: the img2img edit of PhotoGuard's demo (MadryLab/photoguard) and of
FaceLock's `edit.py` (taco-group/FaceLock): strength 0.5, guidance 7.5, at 512 px;
50 denoising steps of the model's own scheduler (PNDM), as FaceLock uses
(PhotoGuard's demo uses 100). The portrait prompts in
configs/generator/sd_img2img.yaml are bench's own: captions that describe the
edits of FaceLock's instruction list, because SD follows captions, not instructions.

`strength` is the fraction of the noise schedule applied to the input: 0.1 keeps
the image almost unchanged, 0.8 keeps little more than its layout. Only
int(steps * strength) denoising steps run.
"""

from benchmark.generators.diffusion import DiffusionEditor
from benchmark.models.sd_pipeline import Img2ImgEditor


class SDImg2Img(Img2ImgEditor, DiffusionEditor):
    name = "sd_img2img"
    version = "2"  # noise drawn in float32 in every precision
    pipeline_class = "StableDiffusionImg2ImgPipeline"
