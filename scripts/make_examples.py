"""Synthesise the example clips in ``examples/digits/``: spoken digits in several espeak-ng voices.

Each clip is one English digit word ("zero" .. "nine") spoken by espeak-ng, converted to what the
Free Spoken Digit Dataset (FSDD) uses: mono 16-bit WAV at 8000 Hz, trimmed to near-minimal
silence, and peak-normalised to -1 dBFS. Files are named FSDD-style ``{digit}_{speaker}_{take}.wav``
so the app and ``python -m vae preprocess`` read digit and speaker from the name.

Run from the repository root (the output is deterministic for one espeak-ng version)::

    .venv/bin/python scripts/make_examples.py              # all digits, all voices -> examples/digits
    .venv/bin/python scripts/make_examples.py --output /tmp/x --digits 3 7 --voices espeakf

It needs the ``espeak-ng`` program (Debian/Ubuntu: ``apt-get install espeak-ng``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from preprocessing.audio import resample, save_wav

ROOT = Path(__file__).resolve().parents[1]

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 8000  # Hz, as FSDD
PEAK_DBFS = -1.0
MAX_DURATION = 0.76  # s: one window of the "digits" preset; re-synthesised faster when longer
TRIM_DB = -50.0  # frames quieter than this, relative to the loudest frame, count as silence
PAD_S = 0.015  # silence kept before the first and after the last voiced frame
FADE_S = 0.005  # fade at both ends so trimming leaves no click
DEFAULT_OUTPUT = ROOT / "examples" / "digits"


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice+variant, speed (words/min) and base pitch (0-99)."""

    speaker: str  # FSDD speaker name: lowercase letters only
    espeak: str
    speed: int
    pitch: int
    about: str


# Three clearly different voices (median F0 about 80, 220 and 120 Hz): a low British male, a high
# British female and a faster US male (another accent, so the vowels differ too, not only pitch).
VOICES = (
    Voice("espeakm", "en+m3", 165, 35, "British English, male variant m3, low pitch"),
    Voice("espeakf", "en+f3", 175, 70, "British English, female variant f3, high pitch"),
    Voice("espeakus", "en-us+m7", 190, 75, "American English, male variant m7, higher and faster"),
)


class ExampleError(Exception):
    """Synthesis cannot proceed (espeak-ng missing or failing)."""


def find_espeak() -> str:
    """Path of the espeak-ng program; raises :class:`ExampleError` with install hints when absent."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ExampleError("espeak-ng was not found on PATH; install it (Debian/Ubuntu: `sudo apt-get install "
                           "espeak-ng`, macOS: `brew install espeak-ng`) and run this script again")
    return exe


def synthesise(exe: str, word: str, voice: Voice, speed: int) -> tuple[np.ndarray, int]:
    """espeak-ng's rendering of ``word``: (mono float32 signal (n,), sample rate)."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "say.wav"
        cmd = [exe, "-v", voice.espeak, "-s", str(speed), "-p", str(voice.pitch), "-w", str(wav), word]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not wav.is_file():
            raise ExampleError(f"espeak-ng failed for voice {voice.espeak!r}, word {word!r}: "
                               f"{proc.stderr.strip() or f'exit status {proc.returncode}'}")
        data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if data.size == 0:
        raise ExampleError(f"espeak-ng produced no audio for voice {voice.espeak!r}, word {word!r}")
    return data.mean(axis=1), sr


def trim(wave: np.ndarray, sr: int) -> np.ndarray:
    """Cut leading/trailing frames more than ``TRIM_DB`` below the loudest, keeping ``PAD_S`` each side."""
    frame = max(1, int(0.01 * sr))
    n = len(wave) // frame
    if n == 0:
        return wave
    rms = np.sqrt(np.mean(wave[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    voiced = np.flatnonzero(20 * np.log10(rms / rms.max()) > TRIM_DB)
    pad = int(PAD_S * sr)
    start = max(0, voiced[0] * frame - pad)
    end = min(len(wave), (voiced[-1] + 1) * frame + pad)
    out = wave[start:end].copy()
    fade = min(int(FADE_S * sr), len(out) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return out


def render(exe: str, digit: int, voice: Voice) -> tuple[np.ndarray, int]:
    """The finished clip (8 kHz, trimmed, -1 dBFS peak) and the espeak speed that made it."""
    speed = voice.speed
    while True:
        wave, sr = synthesise(exe, WORDS[digit], voice, speed)
        wave = trim(resample(wave, sr, SAMPLE_RATE), SAMPLE_RATE)
        if len(wave) <= MAX_DURATION * SAMPLE_RATE or speed >= 260:
            break
        speed = min(260, int(speed * 1.1))  # too long for one window: say it a little faster
    peak = float(np.abs(wave).max())
    if peak < 1e-4:
        raise ExampleError(f"espeak-ng produced silence for voice {voice.espeak!r}, digit {digit}")
    return wave * (10 ** (PEAK_DBFS / 20) / peak), speed


def make_examples(output: Path, digits: list[int], voices: list[Voice]) -> list[dict]:
    """Write one clip per digit and voice into ``output``; one row of facts per clip."""
    exe = find_espeak()
    rows = []
    for voice in voices:
        for digit in digits:
            wave, speed = render(exe, digit, voice)
            path = save_wav(output / f"{digit}_{voice.speaker}_0.wav", wave, SAMPLE_RATE)
            check, sr = sf.read(str(path), dtype="float32")
            rows.append(dict(file=path.name, voice=voice.espeak, speed=speed, sr=sr,
                             duration=len(check) / sr,
                             peak_db=20 * np.log10(np.abs(check).max()),
                             rms_db=20 * np.log10(np.sqrt(np.mean(check.astype(np.float64) ** 2)))))
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'file':<20} {'voice':<10} {'speed':>5} {'Hz':>5} {'dur s':>6} {'peak dB':>8} {'rms dB':>7}"]
    lines += [f"{r['file']:<20} {r['voice']:<10} {r['speed']:>5} {r['sr']:>5} {r['duration']:>6.3f} "
              f"{r['peak_db']:>8.2f} {r['rms_db']:>7.1f}" for r in rows]
    durs = [r["duration"] for r in rows]
    lines.append(f"{len(rows)} clips, duration {min(durs):.3f}-{max(durs):.3f} s, "
                 f"{sum(d > MAX_DURATION for d in durs)} longer than {MAX_DURATION} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    by_name = {v.speaker: v for v in VOICES}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"folder to write (default: {DEFAULT_OUTPUT})")
    ap.add_argument("--digits", type=int, nargs="+", choices=range(10), default=list(range(10)),
                    metavar="D", help="digits 0-9 to synthesise (default: all)")
    ap.add_argument("--voices", nargs="+", choices=sorted(by_name), default=list(by_name),
                    help="speakers to synthesise (default: all)")
    args = ap.parse_args(argv)
    try:
        rows = make_examples(args.output, args.digits, [by_name[v] for v in args.voices])
    except ExampleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(rows))
    print(f"wrote {len(rows)} files to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
