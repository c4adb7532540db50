"""Write the synthetic driving clip shipped for tests and experiment=tiny.

benchmark/data/sounds/chirp.wav: 1.5 s, 16 kHz (Hallo's audio rate), 16-bit mono PCM,
a chirp from 150 to 600 Hz under a 4 Hz syllable-like envelope, written with the
standard library's `wave`. Generated here, so it carries no rights of anyone.

    python scripts/make_sample_audio.py
"""

import math
import struct
import wave
from pathlib import Path

RATE, SECONDS, LOW, HIGH, SYLLABLES = 16000, 1.5, 150.0, 600.0, 4.0


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "benchmark" / "data" / "sounds" / "chirp.wav"
    n = int(RATE * SECONDS)
    values = []
    for i in range(n):
        t = i / RATE
        phase = 2 * math.pi * (LOW * t + (HIGH - LOW) * t * t / (2 * SECONDS))
        envelope = 0.5 * (1 - math.cos(2 * math.pi * SYLLABLES * t))
        values.append(round(0.6 * 32767 * envelope * math.sin(phase)))
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(struct.pack(f"<{n}h", *values))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
