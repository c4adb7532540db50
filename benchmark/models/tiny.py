"""Tiny, randomly initialised Stable Diffusion components, built in-process from small configs.

RANDOM WEIGHTS: the images these models make are meaningless. They exist so
that every code path that needs diffusion weights (generators, diffusion-targeted
defenses) runs offline, on a CPU, in seconds: plumbing, tests, `experiment=tiny`.

The model ids are recognised everywhere a Hugging Face id or a local path is:

    tiny/sd                  SD 1.x layout: UNet with 4 input channels
    tiny/sd-inpaint          inpainting UNet: 9 input channels (latent, mask, masked latent)
    tiny/instruct-pix2pix    InstructPix2Pix UNet: 8 input channels (latent, image latent)

Sizes follow diffusers' own pipeline tests (UNet2DConditionModel with
block_out_channels (32, 64), a two-block AutoencoderKL with 4 latent channels,
a 5-layer CLIP text encoder with hidden size 32). Weights are drawn from a fixed
seed, so every process builds the same numbers. The tokenizer is a real CLIP
byte-level BPE tokenizer over a vocabulary written here: the 256 byte symbols,
each also as a word end, plus the start/end tokens, and no merges (every word
is spelled out in characters).
"""

from contextlib import contextmanager

import torch

TINY_PREFIX = "tiny/"
UNET_IN_CHANNELS = {"tiny/sd": 4, "tiny/sd-inpaint": 9, "tiny/instruct-pix2pix": 8}
TINY_MODELS = tuple(UNET_IN_CHANNELS)
NOTICE = "random weights: meaningless images, for plumbing and tests only"

SEED = 0
HIDDEN = 32
MAX_TOKENS = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def is_tiny(model: str) -> bool:
    return str(model).startswith(TINY_PREFIX)


def check_tiny(model: str) -> None:
    if model not in UNET_IN_CHANNELS:
        from benchmark.errors import BenchError

        raise BenchError(f"unknown tiny model {model!r}; the built-in ones are "
                         f"{', '.join(TINY_MODELS)} ({NOTICE})")


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


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=tiny_vocabulary(), merges=[], model_max_length=MAX_TOKENS)


def tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = tiny_vocabulary()
    config = CLIPTextConfig(
        vocab_size=1000, hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=5,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, layer_norm_eps=1e-5,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])
    with _seeded(1):
        return CLIPTextModel(config).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    with _seeded(2):
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            sample_size=64).eval()


def tiny_unet(model: str):
    from diffusers import UNet2DConditionModel

    check_tiny(model)
    with _seeded(3 + TINY_MODELS.index(model)):
        return UNet2DConditionModel(
            sample_size=32, in_channels=UNET_IN_CHANNELS[model], out_channels=4,
            block_out_channels=(32, 64), layers_per_block=2, cross_attention_dim=HIDDEN,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8).eval()


def tiny_scheduler():
    """SD 1.x's own scheduler settings (PNDM, scaled-linear betas 0.00085..0.012)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False,
                         steps_offset=1)


def save_tiny(model: str, directory) -> None:
    """Write a tiny model as a diffusers folder (model_index.json + subfolders, safetensors)."""
    import json
    from pathlib import Path

    check_tiny(model)
    root = Path(directory)
    tiny_vae().save_pretrained(root / "vae")
    tiny_unet(model).save_pretrained(root / "unet")
    tiny_text_encoder().save_pretrained(root / "text_encoder")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    tiny_scheduler().save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_bench_notice": NOTICE,
        "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"]}, indent=2) + "\n")
