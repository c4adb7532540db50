"""Single-network checkpoints (the GAN editors, DF-RAP's ComGAN): where the file is, and the
network with its weights, or with random ones drawn from a fixed seed (`random`: plumbing and
tests only). Shared by the generators and the defenses that attack them."""

from pathlib import Path

import torch
from torch import nn

from benchmark.errors import BenchError
from benchmark.models.hub import find_file, hub_cache_dir, load_checkpoint

RANDOM = "random"
RANDOM_SEED = 0


def resolve_weights(spec: str | None, key: str, how_to_get: str) -> Path | None:
    """The local checkpoint file `spec` names (None for `random`), or an error saying how to get it."""
    if spec == RANDOM:
        return None
    if not spec:
        raise BenchError(f"{key} is not set: {how_to_get}; then set {key}=/path/to/file (or "
                         f"owner/repo/file of a Hugging Face repository in the local cache: "
                         f"HF_HOME points at it), or {key}=random for a random-weight network")
    found = find_file(spec)
    if found is not None:
        return found
    raise BenchError(f"{key}={spec!r} is neither a local file nor a file of a Hugging Face "
                     f"repository in the local cache {hub_cache_dir()} (HF_HOME moves it): "
                     f"{how_to_get}")


def load_network(build_network, path: Path | None, state_key: str | None = None,
                 calibrate=None) -> nn.Module:
    """A network with the checkpoint's weights (strict names), or random ones from a fixed seed
    (then `calibrate(network)`, if given, runs in the same seeded context)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        network = build_network()
        if path is None and calibrate is not None:
            calibrate(network)
    if path is not None:
        state = load_checkpoint(path)
        if state_key and isinstance(state, dict) and state_key in state:
            state = state[state_key]
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise BenchError(f"{path}: not a checkpoint of this architecture and size "
                             f"({str(e).splitlines()[0]} ...)") from None
    return network.eval().requires_grad_(False)
