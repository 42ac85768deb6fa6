"""A generated music corpus at GTZAN's scale: deterministic, fast, music-like audio for the scale benchmark.

GTZAN is 1,000 clips of 30 s at 22,050 Hz in ten genre folders (``<genre>/<genre>.000NN.wav``). This writes
any number of such clips in the same layout, 16-bit WAV like GTZAN's: per clip, a tempo, a key and a scale; a
melody of notes (2-6 harmonics, decaying envelopes), a triad a bar, noise-burst percussion on the beats
whose level depends on the "genre", and a faint noise floor, normalised to a peak of 0.5-0.9. Each clip
depends only on (seed, index), so a corpus is the same on every machine and can be extended.

Cost: about 60 ms a 30 s clip on one core (harmonics by the Chebyshev recurrence: two trigonometric
evaluations a note, then multiply-adds), 1.3 MB a clip on disk.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10))  # major, natural minor (semitones)
MARKER = ".corpus.json"  # written last (a folder without it is incomplete); hidden, so not an input file


def _add_notes(wave: np.ndarray, sr: int, starts: np.ndarray, durs: np.ndarray, freqs: np.ndarray,
               amps: np.ndarray, decays: np.ndarray, n_harm: int, bright: float) -> None:
    """Add notes to ``wave`` (n,) in place: start and duration (s), fundamental (Hz), amplitude, decay (1/s);
    harmonic h has amplitude ``bright ** (h - 1)`` (none above Nyquist)."""
    for s0, d, f, a, k in zip(starts, durs, freqs, amps, decays):
        i0 = int(s0 * sr)
        n = min(int(d * sr), len(wave) - i0)
        if n <= 0:
            continue
        t = np.arange(n, dtype=np.float32) / np.float32(sr)
        x = np.float32(2 * np.pi * f) * t
        s1, c2 = np.sin(x), 2 * np.cos(x)
        prev, cur, acc = np.zeros_like(s1), s1, s1.copy()
        for h in range(2, n_harm + 1):  # sin(h x) = 2 cos(x) sin((h - 1) x) - sin((h - 2) x)
            prev, cur = cur, c2 * cur - prev
            if f * h < sr / 2:
                acc += cur * np.float32(bright ** (h - 1))
        attack = np.minimum(1.0, t / 0.01)  # 10 ms attack, 20 ms release: no clicks
        release = np.minimum(1.0, (np.float32(n / sr) - t) / 0.02)
        wave[i0:i0 + n] += np.float32(a) * np.exp(-np.float32(k) * t) * attack * release * acc


def clip(index: int, seconds: float = 30.0, sr: int = 22050, seed: int = 0) -> np.ndarray:
    """Clip ``index`` of the corpus: float32 (round(seconds * sr),), peak 0.5-0.9."""
    rng = np.random.default_rng([seed, index])
    n = round(seconds * sr)
    wave = np.zeros(n, np.float32)
    beat = 60.0 / rng.uniform(70, 160)  # s
    root, scale = int(rng.integers(40, 56)), np.array(SCALES[int(rng.integers(2))])

    def pitch(degree: int, octave: int = 0) -> float:
        midi = root + 12 * (octave + degree // 7) + scale[degree % 7]
        return 440.0 * 2 ** ((midi - 69) / 12)

    steps = rng.choice([0.5, 1.0, 1.0, 2.0], size=int(seconds / beat * 2) + 1) * beat  # melody: note lengths
    starts = np.cumsum(np.concatenate([[0.0], steps[:-1]]))
    keep = starts < seconds
    starts, steps = starts[keep], steps[keep]
    degrees = np.cumsum(rng.integers(-2, 3, len(starts))) % 14
    _add_notes(wave, sr, starts, steps * 1.1, np.array([pitch(int(d), 1) for d in degrees]),
               rng.uniform(0.2, 0.4, len(starts)), rng.uniform(1, 6, len(starts)), int(rng.integers(2, 7)),
               float(rng.uniform(0.3, 0.7)))
    for bar in np.arange(0, seconds, 4 * beat):  # a triad a bar
        d0 = int(rng.integers(0, 7))
        _add_notes(wave, sr, np.full(3, bar), np.full(3, 4 * beat), np.array([pitch(d0 + k) for k in (0, 2, 4)]),
                   np.full(3, 0.12), np.full(3, 0.5), 4, 0.4)
    level = 0.05 + 0.1 * (index % len(GENRES) % 3)  # percussion: louder in some "genres"
    hit = min(int(0.15 * sr), n)
    burst = np.exp(-np.arange(hit, dtype=np.float32) / np.float32(0.03 * sr))
    for h in np.arange(0, seconds, beat):
        i0 = int(h * sr)
        m = min(hit, n - i0)
        wave[i0:i0 + m] += np.float32(level) * rng.standard_normal(m, dtype=np.float32) * burst[:m]
    wave += 0.003 * rng.standard_normal(n, dtype=np.float32)
    return wave * np.float32(rng.uniform(0.5, 0.9) / max(float(np.abs(wave).max()), 1e-9))


def clip_path(folder: Path, index: int) -> Path:
    genre = GENRES[index % len(GENRES)]
    return folder / genre / f"{genre}.{index:05d}.wav"


def _write(folder: str, indices: list[int], seconds: float, sr: int, seed: int) -> None:
    import soundfile as sf

    for i in indices:
        path = clip_path(Path(folder), i)
        tmp = path.with_name(f".{path.name}.tmp")
        sf.write(str(tmp), clip(i, seconds, sr, seed), sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)  # a killed run leaves no half file under the real name


def make_corpus(folder: str | Path, clips: int, seconds: float = 30.0, sr: int = 22050, seed: int = 0,
                workers: int = 1) -> dict[str, Any]:
    """Write (or reuse) ``clips`` clips in ``folder``; returns its description (also ``folder/.corpus.json``).
    Reused when the marker matches these parameters; files already there from an interrupted run are kept."""
    folder = Path(folder)
    params = {"clips": clips, "seconds": seconds, "sample_rate": sr, "seed": seed, "format": "WAV PCM_16",
              "layout": "<genre>/<genre>.<index>.wav", "generator": "benchmarks.synth_corpus"}
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return {**params, "reused": True}
    marker.unlink(missing_ok=True)
    # clips already there are kept only when made with the same parameters (all but the count)
    made_with, same = folder / ".params.json", {k: v for k, v in params.items() if k != "clips"}
    if made_with.is_file() and json.loads(made_with.read_text()) != same:
        for old in folder.glob("*/*.wav"):
            old.unlink()
    for g in GENRES:
        (folder / g).mkdir(parents=True, exist_ok=True)
    made_with.write_text(json.dumps(same))
    todo = [i for i in range(clips) if not clip_path(folder, i).is_file()]
    if workers > 1 and len(todo) > 1:
        chunks = [todo[k::workers] for k in range(workers)]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for f in [pool.submit(_write, str(folder), c, seconds, sr, seed) for c in chunks]:
                f.result()
    else:
        _write(str(folder), todo, seconds, sr, seed)
    for extra in sorted(folder.glob("*/*.wav")):  # clips of a larger corpus made before in this folder
        if int(extra.stem.rsplit(".", 1)[-1]) >= clips:
            extra.unlink()
    marker.write_text(json.dumps(params, indent=2))
    return {**params, "reused": False}
