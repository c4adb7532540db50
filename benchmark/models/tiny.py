"""Randomly initialised Stable Diffusion components, built in-process from configs: no download.

RANDOM WEIGHTS: the images these models make are meaningless. They exist so
that every code path that needs diffusion weights (generators, diffusion-targeted
defenses) runs offline: plumbing, tests, `experiment=tiny`, speed measurements.

The model ids are recognised everywhere a Hugging Face id or a local path is:

    tiny/sd                  SD 1.x layout: UNet with 4 input channels
    tiny/sd-inpaint          inpainting UNet: 9 input channels (latent, mask, masked latent)
    tiny/instruct-pix2pix    InstructPix2Pix UNet: 8 input channels (latent, image latent)
    random/sd-v1-5           the full-size SD 1.5 architecture (860M-parameter UNet, the
                             83M VAE, the 123M CLIP ViT-L/14 text encoder): speed and memory
    random/sd-v1-5-inpaint   the same with the inpainting UNet's 9 input channels
    random/instruct-pix2pix  the same with InstructPix2Pix's 8 input channels
    tiny/ip-adapter          an IP-Adapter for tiny/sd: a small CLIP vision tower with
                             projection and the adapter's weights (image projection to 4
                             tokens, to_k_ip / to_v_ip per cross-attention layer)

The tiny sizes follow diffusers' own pipeline tests (UNet2DConditionModel with
block_out_channels (32, 64), a two-block AutoencoderKL with 4 latent channels,
a 5-layer CLIP text encoder with hidden size 32); they run in seconds on a CPU.
Weights are drawn from a fixed seed, so every process builds the same numbers.
The tokenizer is a real CLIP byte-level BPE tokenizer over a vocabulary written
here: the 256 byte symbols, each also as a word end, plus the start/end tokens,
and no merges (every word is spelled out in characters).
"""

from contextlib import contextmanager

import torch

UNET_IN_CHANNELS = {"tiny/sd": 4, "tiny/sd-inpaint": 9, "tiny/instruct-pix2pix": 8,
                    "random/sd-v1-5": 4, "random/sd-v1-5-inpaint": 9,
                    "random/instruct-pix2pix": 8}
BUILTIN_MODELS = tuple(UNET_IN_CHANNELS)
FULL_SIZE = ("random/sd-v1-5", "random/sd-v1-5-inpaint", "random/instruct-pix2pix")
NOTICE = "random weights: meaningless images, for plumbing, tests and speed only"
# TIP-RSR's three networks with random weights (benchmark.models.restoration builds them):
# tiny/* at small widths for tests and experiment=tiny, random/* at the published sizes.
RESTORATION_MODELS = ("tiny/gfpgan", "tiny/realesrgan", "tiny/bisenet",
                      "random/gfpgan-v1.3", "random/realesrgan-x4plus", "random/bisenet")

SEED = 0
MAX_TOKENS = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


IP_ADAPTERS = ("tiny/ip-adapter",)  # image prompt adapters for the tiny SD models


def is_builtin(model: str) -> bool:
    return str(model).startswith(("tiny/", "random/"))


def check_builtin(model: str) -> None:
    known = (*BUILTIN_MODELS, *IP_ADAPTERS, *TALKING_HEADS)
    if model not in UNET_IN_CHANNELS and model not in known:
        from benchmark.errors import BenchError

        raise BenchError(f"unknown built-in model {model!r}; the built-in ones are "
                         f"{', '.join(known)} ({NOTICE})")


@contextmanager
def _seeded(offset: int):
    """Fixed-seed construction that leaves the caller's global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + offset)
        yield


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of GPT-2/CLIP byte-level BPE, in byte order."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in visible:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tiny_vocabulary() -> dict[str, int]:
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab


def tiny_tokenizer(model: str = "tiny/sd"):
    """The same small-vocabulary tokenizer for every built-in model (ids < 1000)."""
    from transformers import CLIPTokenizer

    check_builtin(model)
    return CLIPTokenizer(vocab=tiny_vocabulary(), merges=[], model_max_length=MAX_TOKENS)


def tiny_text_encoder(model: str = "tiny/sd"):
    from transformers import CLIPTextConfig, CLIPTextModel

    check_builtin(model)
    vocab = tiny_vocabulary()
    ids = {"bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS],
           "max_position_embeddings": MAX_TOKENS}
    if model in FULL_SIZE:  # CLIP ViT-L/14's text tower, as SD 1.x uses it
        config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                num_hidden_layers=12, num_attention_heads=12,
                                projection_dim=768, hidden_act="quick_gelu", **ids)
    else:
        config = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37,
                                num_hidden_layers=5, num_attention_heads=4, layer_norm_eps=1e-5,
                                **ids)
    with _seeded(1):
        return CLIPTextModel(config).eval()


def tiny_vae(model: str = "tiny/sd"):
    from diffusers import AutoencoderKL

    check_builtin(model)
    full = model in FULL_SIZE
    blocks = (128, 256, 512, 512) if full else (32, 64)
    with _seeded(2):
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks,
            layers_per_block=2 if full else 1,
            down_block_types=("DownEncoderBlock2D",) * len(blocks),
            up_block_types=("UpDecoderBlock2D",) * len(blocks),
            sample_size=512 if full else 64).eval()


def tiny_unet(model: str = "tiny/sd"):
    from diffusers import UNet2DConditionModel

    check_builtin(model)
    if model in FULL_SIZE:  # SD 1.5's unet/config.json
        sizes = {"sample_size": 64, "block_out_channels": (320, 640, 1280, 1280),
                 "cross_attention_dim": 768,
                 "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
    else:
        sizes = {"sample_size": 32, "block_out_channels": (32, 64), "cross_attention_dim": 32,
                 "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                 "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}
    with _seeded(3 + BUILTIN_MODELS.index(model)):
        return UNet2DConditionModel(in_channels=UNET_IN_CHANNELS[model], out_channels=4,
                                    layers_per_block=2, attention_head_dim=8, **sizes).eval()


def tiny_scheduler(model: str = "tiny/sd"):
    """SD 1.x's own scheduler settings (PNDM, scaled-linear betas 0.00085..0.012)."""
    from diffusers import PNDMScheduler

    check_builtin(model)
    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False,
                         steps_offset=1)


def save_tiny(model: str, directory) -> None:
    """Write a built-in model as a diffusers folder (model_index.json + subfolders, safetensors)."""
    import json
    from pathlib import Path

    check_builtin(model)
    root = Path(directory)
    tiny_vae(model).save_pretrained(root / "vae")
    tiny_unet(model).save_pretrained(root / "unet")
    tiny_text_encoder(model).save_pretrained(root / "text_encoder")
    tiny_tokenizer(model).save_pretrained(root / "tokenizer")
    tiny_scheduler(model).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_bench_notice": NOTICE,
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"]}, indent=2) + "\n")


def tiny_image_encoder(adapter: str = "tiny/ip-adapter"):
    """IP-Adapter's CLIP vision tower with projection, at the size of diffusers' IP-Adapter
    tests (hidden size 32, 32-d image_embeds); 32 px input in 4 px patches."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    check_builtin(adapter)
    config = CLIPVisionConfig(hidden_size=32, projection_dim=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=37, image_size=32,
                              patch_size=4)
    with _seeded(20):
        return CLIPVisionModelWithProjection(config).eval()


def tiny_ip_adapter_weights(unet, image_embed_dim: int, adapter: str = "tiny/ip-adapter") -> dict:
    """Random IP-Adapter weights for `unet`, in the layout of h94/IP-Adapter's checkpoints:
    {"image_proj": proj (linear to 4 tokens) + norm, "ip_adapter": "<k>.to_k_ip.weight", ...}
    with k = 1, 3, 5, ... over the cross-attention layers in `unet.attn_processors` order.
    to_k_ip / to_v_ip start from the layer's own to_k / to_v plus noise, as IP-Adapter's
    training initialises them, so the image tokens are read at the text tokens' scale."""
    check_builtin(adapter)
    tokens, cross = 4, unet.config.cross_attention_dim
    with _seeded(21):
        proj = torch.nn.Linear(image_embed_dim, tokens * cross)
        state = {"image_proj": {"proj.weight": proj.weight.detach().clone(),
                                "proj.bias": proj.bias.detach().clone(),
                                "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)},
                 "ip_adapter": {}}
        key = 1
        for name in unet.attn_processors:
            if name.endswith("attn1.processor"):
                continue
            attn = unet.get_submodule(name[: -len(".processor")])
            for part in ("k", "v"):
                weight = getattr(attn, f"to_{part}").weight.detach().float()
                noise = torch.randn(weight.shape) * weight.std()
                state["ip_adapter"][f"{key}.to_{part}_ip.weight"] = weight + noise
            key += 2
    return state


# -- the talking-head stand-in (benchmark.models.talking_head) ----------------------------------

TALKING_HEADS = ("tiny/talking-head",)  # an audio-conditioned latent denoiser for tiny/sd's VAE


def tiny_talking_head_unet():
    """The denoiser of tiny/talking-head: tiny/sd's UNet layout with 8 input channels (the
    noisy latent and the portrait's latent, concatenated) and cross-attention to audio tokens."""
    from diffusers import UNet2DConditionModel

    with _seeded(30):
        return UNet2DConditionModel(
            in_channels=8, out_channels=4, layers_per_block=2, attention_head_dim=8,
            sample_size=32, block_out_channels=(32, 64), cross_attention_dim=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).eval()


class TinyAudioEncoder(torch.nn.Module):
    """Audio tokens per video frame, shaped like Hallo's wav2vec + AudioProjModel path.

    Stand-in for wav2vec (not offline): per video frame (16 kHz, 25 fps: 640 samples) the
    log-magnitude spectrum of the Hann-windowed samples, averaged into `bands` bands; each
    frame sees its neighbours within +-`window` frames (Hallo's process_audio_emb, clamped at
    the ends); a random MLP (Linear-ReLU-Linear-ReLU-Linear-LayerNorm, AudioProjModel's
    shape) maps that to `tokens` tokens of `dim` channels."""

    def __init__(self, bands: int = 32, window: int = 2, hidden: int = 64, tokens: int = 4,
                 dim: int = 32, samples_per_frame: int = 640):
        super().__init__()
        self.bands, self.window, self.tokens, self.dim = bands, window, tokens, dim
        self.samples_per_frame = samples_per_frame
        with _seeded(31):
            self.proj = torch.nn.Sequential(
                torch.nn.Linear((2 * window + 1) * bands, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, tokens * dim))
            self.norm = torch.nn.LayerNorm(dim)
        self.eval()

    def features(self, samples: torch.Tensor, frames: int) -> torch.Tensor:
        """(frames, bands) spectral features; a clip shorter than the video is zero-padded."""
        need = frames * self.samples_per_frame
        samples = torch.nn.functional.pad(samples.float(), (0, max(0, need - len(samples))))
        chunks = samples[:need].view(frames, self.samples_per_frame)
        hann = torch.hann_window(self.samples_per_frame, periodic=False)
        spectrum = torch.fft.rfft(chunks * hann.to(chunks), dim=-1).abs().log1p()
        return torch.nn.functional.adaptive_avg_pool1d(spectrum[:, None], self.bands)[:, 0]

    def forward(self, samples: torch.Tensor, frames: int) -> torch.Tensor:
        """(frames, tokens, dim) audio tokens of one clip at 16 kHz."""
        feats = self.features(samples.to(next(self.parameters()).device), frames)
        index = torch.arange(frames)[:, None] + torch.arange(-self.window, self.window + 1)
        windows = feats[index.clamp(0, frames - 1)].flatten(1)
        return self.norm(self.proj(windows).view(frames, self.tokens, self.dim))
