"""Per-image driving audio (`dataset.audio`): what a talking-head generator speaks.

A talking-head model (Hallo; Silencer's target) animates a portrait with an audio
clip, so the audio is side information of the image, like its inpainting mask:
the runner gives each clean image's clip to the components whose `needs_audio` is
true (`audio=`, a list of `Audio`, aligned with the batch) and adds the clip's
content key to that item's cache key, so changing one image's audio file recomputes
only that image's items.

`dataset.audio` is one of

- null: no audio (a component that needs it stops the job before any compute);
- `sample`: the clip shipped with bench (`benchmark/data/sounds/chirp.wav`, 1.5 s of a
  synthetic 16 kHz chirp written by scripts/make_sample_audio.py) for every image;
- a `.wav` file: that clip for every image (the study and Silencer drive every portrait
  with one clip, Hallo's `examples/driving_audios/1.wav`);
- a folder: the clip of `<root>/<rel>/<stem>.<ext>` is `<audio>/<rel>/<stem>.wav`.

Files are read with the standard library's `wave` (integer PCM: 8, 16, 24, 32 bit),
else with scipy.io.wavfile (float WAV); channels are averaged to mono, values scaled to
[-1, 1]. Back ends resample to their own rate (Hallo: 16 kHz).
"""

import hashlib
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.errors import BenchError, first_few

SAMPLE = "sample"
AUDIO_EXTENSIONS = (".wav",)


def sample_audio_path() -> Path:
    return Path(__file__).parent / "sounds" / "chirp.wav"


@dataclass(frozen=True)
class Audio:
    samples: torch.Tensor  # (T,) float32 mono in [-1, 1]
    rate: int  # samples per second
    key: str  # SHA-256 of the decoded samples and the rate: the clip's identity in cache keys

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def _pcm(frames: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        values = np.frombuffer(frames, np.uint8).astype(np.float64) - 128
    elif width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3).astype(np.int32)
        values = (raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)).astype(np.int64)
        values = np.where(values >= 1 << 23, values - (1 << 24), values).astype(np.float64)
    else:
        values = np.frombuffer(frames, {2: "<i2", 4: "<i4"}[width]).astype(np.float64)
    return values.reshape(-1, channels) / float(1 << (8 * width - 1))


def read_wav(path: str | Path) -> Audio:
    """One WAV file as mono float samples; BenchError names the file when it cannot be read."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            rate, width, channels = f.getframerate(), f.getsampwidth(), f.getnchannels()
            if width not in (1, 2, 3, 4):
                raise BenchError(f"{path}: {8 * width}-bit PCM is not supported")
            values = _pcm(f.readframes(f.getnframes()), width, channels)
    except (wave.Error, EOFError):  # not integer PCM (e.g. IEEE float): scipy reads those
        from scipy.io import wavfile

        try:
            rate, data = wavfile.read(str(path))
        except (ValueError, OSError) as e:
            raise BenchError(f"audio file {path} is not a readable WAV file: {e}") from None
        values = data.astype(np.float64).reshape(len(data), -1)
        if np.issubdtype(data.dtype, np.integer):
            values /= float(np.iinfo(data.dtype).max + 1)
    except OSError as e:
        raise BenchError(f"audio file {path} cannot be read: {e}") from None
    mono = np.clip(values.mean(axis=1), -1, 1).astype(np.float32)
    if len(mono) == 0 or rate <= 0:
        raise BenchError(f"audio file {path} holds no samples")
    digest = hashlib.sha256(f"{rate}:".encode())
    digest.update(mono.tobytes())
    return Audio(torch.from_numpy(mono), int(rate), digest.hexdigest())


def resample(audio: Audio, rate: int) -> torch.Tensor:
    """The samples at `rate` per second (polyphase filtering, scipy.signal.resample_poly)."""
    if audio.rate == rate:
        return audio.samples
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, audio.rate)
    out = resample_poly(audio.samples.numpy().astype(np.float64), rate // g, audio.rate // g)
    return torch.from_numpy(out.astype(np.float32))


class AudioSource:
    """Where each image's clip is: one file for all, or a folder mirroring the images'."""

    def __init__(self, audio: str, component: str):
        if not isinstance(audio, str) or not audio.strip():
            raise BenchError(f"{component}: audio={audio!r} is invalid; expected null, "
                             f"'{SAMPLE}', a .wav file or a folder of <stem>.wav files")
        self.path = sample_audio_path() if audio == SAMPLE else Path(audio).expanduser()
        self.single = self.path.is_file()
        if not self.single and not self.path.is_dir():
            raise BenchError(f"{component}: audio={audio!r}: no such file or folder (one .wav "
                             f"for every image, or a folder with <rel>/<stem>.wav per image)")
        self._loaded: dict[Path, Audio] = {}

    def file_of(self, relative: Path) -> Path:
        """The clip of the image at `relative` (its path under the dataset's root)."""
        if self.single:
            return self.path
        return self.path / relative.parent / f"{relative.stem}.wav"

    def check(self, relatives: list[Path]) -> None:
        """Every image has its clip; else one error naming the first few missing files."""
        missing = [str(self.file_of(r)) for r in relatives if not self.file_of(r).is_file()]
        if missing:
            raise BenchError(f"dataset.audio={str(self.path)!r}: {len(missing)} of "
                             f"{len(relatives)} image(s) have no clip (the clip of "
                             f"<root>/<rel>/<stem>.<ext> is <audio>/<rel>/<stem>.wav): "
                             f"{first_few(missing)}")

    def load(self, relative: Path) -> Audio:
        path = self.file_of(relative)
        if path not in self._loaded:
            self._loaded[path] = read_wav(path)
        return self._loaded[path]
