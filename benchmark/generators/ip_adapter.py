"""IP-Adapter: Stable Diffusion 1.5 generates from the portrait as an image prompt plus a text prompt.

Ye, Zhang, Liu, Han, Yang. "IP-Adapter: Text Compatible Image Prompt Adapter for
Text-to-Image Diffusion Models." arXiv:2308.06721, 2023. The editor that FaceShield
(Jeong et al., ICCV 2025) protects against, and the one the study (arXiv 2604.23688)
uses for FaceShield's row. Run through diffusers' StableDiffusionPipeline with the
adapter attached as `load_ip_adapter` does (benchmark/models/ip_adapter.py).

The portrait enters only through its CLIP image embedding (224 px, CLIPImageProcessor's
bicubic resize and normalisation, computed here on the tensor and handed to the
pipeline as `ip_adapter_image_embeds`; the unconditional branch of classifier-free
guidance gets a zero embedding, as diffusers' `encode_image` gives it). Each image is its own
pipeline call: diffusers' StableDiffusionPipeline repeats given image embeddings for every
prompt of a batch, which would let each image attend to its batch mates' image tokens. The output is
text-to-image: `resolution` pixels square, from the seed's latent noise, so G(x) and
G(T(x_adv)) of one subject start from the same noise and get the same prompt.

Defaults from tencent-ailab/IP-Adapter, ip_adapter/ip_adapter.py `IPAdapter.generate`:
scale 1.0, guidance 7.5, 30 denoising steps, prompt "best quality, high quality",
negative prompt "monochrome, lowres, bad anatomy, worst quality, low quality"; the
weights `models/ip-adapter_sd15.safetensors` and image encoder `models/image_encoder`
of h94/IP-Adapter, on stable-diffusion-v1-5 at 512 px (FaceShield's execute.sh names
the same adapter file, as `ip-adapter_sd15.bin`, and SD 1.5).
"""

from benchmark.errors import check
from benchmark.generators.diffusion import DiffusionEditor
from benchmark.models import ip_adapter as ipa
from benchmark.models import shared


class IPAdapterEditor(DiffusionEditor):
    name = "ip_adapter"
    version = "2"  # 2: one pipeline call per image (batch mates' image tokens no longer mixed)
    pipeline_class = "StableDiffusionPipeline"

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 adapter: str = "h94/IP-Adapter",
                 weights: str = "models/ip-adapter_sd15.safetensors",
                 image_encoder: str = "models/image_encoder", scale: float = 1.0,
                 prompts=("best quality, high quality",), steps: int = 30,
                 guidance: float = 7.5,
                 negative_prompt: str = "monochrome, lowres, bad anatomy, worst quality, "
                                        "low quality", **kwargs):
        check(self.name, "scale", scale, isinstance(scale, (int, float)) and scale >= 0,
              "a weight >= 0 of the image prompt (IP-Adapter's scale; 0 = text only)")
        for key, value in (("adapter", adapter), ("weights", weights),
                           ("image_encoder", image_encoder)):
            check(self.name, key, value, isinstance(value, str) and value.strip() != "",
                  "a non-empty string (Hugging Face id / local folder, file, subfolder)")
        super().__init__(model, prompts, steps, guidance, negative_prompt=negative_prompt,
                         **kwargs)
        ipa.require_adapter(adapter, weights, image_encoder)
        self.adapter, self.weights, self.image_encoder = adapter, weights, image_encoder
        self.scale = float(scale)

    @property
    def encoder(self):
        return ipa.load_image_encoder(self.adapter, self.image_encoder, self.dtype, self.device)

    @property
    def unet(self):
        unet = ipa.load_ip_unet(self.model, self.adapter, self.weights, self.image_encoder,
                                self.dtype, self.device)
        if not self.compile:
            return unet
        import torch

        key = ("compiled-ip-unet", self.model, self.adapter, self.weights, self.dtype,
               str(self.device))
        return shared(key, lambda: torch.compile(unet))

    @property
    def pipeline(self):
        key = ("pipeline", self.pipeline_class, self.model, self.adapter, self.weights,
               self.dtype, str(self.device), self.compile)
        return shared(key, self._build_pipeline)

    def _build_pipeline(self):
        from diffusers import StableDiffusionPipeline

        parts = self.components
        pipe = StableDiffusionPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
            unet=self.unet, scheduler=parts.scheduler, safety_checker=None,
            feature_extractor=None, image_encoder=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def call_pipeline(self, pipe, x, seeds, common):
        import torch

        embeds = ipa.image_embeds(self.encoder, x, mode="bicubic")[:, None]  # (N, 1 image, D)
        ipa.set_scale(pipe.unet, self.scale)  # the UNet is shared with FaceShield
        size = x.shape[-1]
        # One pipeline call per image: StableDiffusionPipeline.prepare_ip_adapter_image_embeds
        # repeats the given embeddings batch-size times (it takes them as one prompt's), so in a
        # batch of N every image's UNet pass would attend to the image tokens of all N.
        out = []
        for i in range(len(x)):
            one = embeds[i:i + 1]
            if self.guidance > 1:  # diffusers' order: unconditional (zero embedding) first
                one = torch.cat([torch.zeros_like(one), one])
            mine = {k: (v[i:i + 1] if isinstance(v, list) else v) for k, v in common.items()}
            out.append(pipe(ip_adapter_image_embeds=[one.to(self.device, pipe.unet.dtype)],
                            height=size, width=size, **mine).images)
        return torch.cat(out)
