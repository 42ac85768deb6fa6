"""Render the music example clips in ``examples/music/`` from public-domain scores.

Each clip is the opening of a public-domain work from the music21 corpus, turned into MIDI note
events (with our own instruments, tempo and, for one clip, a General MIDI drum part added on
channel 10), rendered to audio by FluidSynth with the FluidR3 General MIDI soundfont (MIT), then
resampled to 22,050 Hz mono, cut to ``DURATION`` seconds with short fades and peak-normalised to
``PEAK``. The files are 16-bit WAV, and the ``music`` and ``study-music`` presets read them whole.

Run from the repository root (the output is deterministic for one FluidSynth and soundfont version)::

    .venv/bin/python scripts/make_music_examples.py                # every clip -> examples/music
    .venv/bin/python scripts/make_music_examples.py --output /tmp/x --clips bach_chorale_organ
    .venv/bin/python scripts/make_music_examples.py --check        # re-render, compare with examples/music

The rendering path here (score -> note events -> MIDI -> FluidSynth) is shared with
``scripts/make_music_corpus.py``, which imports this module.

It needs the ``fluidsynth`` program and the FluidR3 soundfont (Debian/Ubuntu: ``apt-get install
fluidsynth fluid-soundfont-gm``) and the ``music21`` package (``pip install music21``).
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from preprocessing.audio import resample, save_wav

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "examples" / "music"
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian's fluid-soundfont-gm
SAMPLE_RATE = 22050  # Hz, as the music presets
RENDER_RATE = 44100  # FluidSynth renders at the soundfont's rate, then the clip is resampled
DURATION = 6.0  # s: one window of study-music (5.94 s), two of music (2.97 s)
PEAK = 0.9
FADE_IN_S, FADE_OUT_S = 0.005, 0.3
TICKS_PER_QUARTER, MIDI_TEMPO_US = 480, 500_000  # MIDI clock: 960 ticks per second
DRUM_CHANNEL = 9  # General MIDI channel 10
CHECK_TOLERANCE = 2 / 32768  # --check: largest sample difference (16-bit steps) that still counts as equal


@dataclass(frozen=True)
class Clip:
    """One example: a music21 corpus work, how to play it, and what to call the file."""

    name: str  # file stem
    work: str  # music21 corpus path
    title: str
    source: str  # composer or collection, year
    programs: tuple[int, ...]  # General MIDI program (0-127) per part, in score order
    bpm: float  # quarter notes per minute
    start: float = 0.0  # quarter-note offset in the score where the clip starts
    number: int | None = None  # tune number within an ABC collection
    transpose: int = 0  # semitones
    drums: str = ""  # a drum pattern on channel 10: "" (none) or one of DRUM_PATTERNS
    about: str = ""


CLIPS = (
    Clip("bach_chorale_organ", "bach/bwv66.6", "Chorale from Cantata BWV 66, no. 6", "J. S. Bach, 1724",
         (19, 19, 19, 19), 72, about="four-part chorale, church organ"),
    Clip("haydn_quartet_strings", "haydn/opus74no1/movement1", "String Quartet op. 74 no. 1, i (Allegro)",
         "J. Haydn, 1793", (40, 40, 41, 42), 150, start=8.0, about="string quartet (violins, viola, cello)"),
    Clip("joplin_rag_piano", "joplin/maple_leaf_rag", "Maple Leaf Rag", "S. Joplin, 1899", (0, 0), 92,
         about="ragtime, acoustic grand piano"),
    Clip("reel_guitar", "ryansMammoth/ArkansasTravellerReel", "Arkansas Traveller (reel)",
         "Ryan's Mammoth Collection, 1883", (24,), 200, transpose=12, about="fiddle tune, nylon-string guitar"),
    Clip("fife_march_drums", "miscFolk/americanfifeopus", "The British Grenadiers", "traditional fife tune, "
         "18th century", (72,), 112, number=6, transpose=-12, drums="march",
         about="march, piccolo with bass drum and snare"),
)


class ExampleError(Exception):
    """Rendering cannot proceed (a tool, the soundfont or music21 missing, or FluidSynth failing)."""


def find_tools() -> tuple[str, Path]:
    """(fluidsynth program, soundfont); raises :class:`ExampleError` with install hints."""
    exe = shutil.which("fluidsynth")
    if exe is None or not SOUNDFONT.is_file():
        raise ExampleError(f"fluidsynth and {SOUNDFONT} are needed; install them (Debian/Ubuntu: `sudo apt-get "
                           "install fluidsynth fluid-soundfont-gm`) and run this script again")
    try:
        import music21  # noqa: F401
    except ImportError as e:
        raise ExampleError("the music21 package is needed: `pip install music21` "
                           "(it is in requirements-dev.txt)") from e
    return exe, SOUNDFONT


# ---------------------------------------------------------------- score -> note events

Event = tuple[float, float, int, int, int]  # (start s, end s, channel, MIDI pitch, velocity)


def load_score(clip: Clip):
    """The music21 score of ``clip``'s work (one tune of an ABC collection when ``number`` is set)."""
    from music21 import corpus

    return corpus.parse(clip.work, number=clip.number) if clip.number else corpus.parse(clip.work)


def note_events(clip: Clip, score, duration: float = DURATION) -> list[Event]:
    """Every sounding note of ``score`` in the first ``duration`` seconds from ``clip.start``, one MIDI channel
    per part (as many parts as ``clip.programs``); pitches outside MIDI's range are left out."""
    from music21 import harmony

    seconds = 60.0 / clip.bpm
    events = []
    for channel, part in enumerate(score.parts[: len(clip.programs)]):
        for el in part.stripTies().flatten().notes:
            if isinstance(el, harmony.Harmony) or el.quarterLength == 0:  # chord symbols, grace notes
                continue
            start = (float(el.offset) - clip.start) * seconds
            if start < 0 or start >= duration:
                continue
            end = min(duration, start + float(el.quarterLength) * seconds * 0.95)  # a little détaché
            velocity = int(el.volume.velocity or 84)
            pitches = [p.midi + clip.transpose for p in el.pitches]
            events += [(start, end, channel, p, velocity) for p in pitches if 0 <= p <= 127]
    return events


def _march_beat(t: float, quarters: float, bar: float) -> list[Event]:
    """Snare on every eighth, accented on the beats; bass drum on each bar's downbeat."""
    events = [(t, t + 0.1, DRUM_CHANNEL, 38, 72 if quarters % 1 == 0 else 48)]  # acoustic snare
    if quarters % bar == 0:
        events.append((t, t + 0.2, DRUM_CHANNEL, 36, 88))  # bass drum
    return events


def _dance_beat(t: float, quarters: float, bar: float) -> list[Event]:
    """Closed hi-hat on every eighth; bass drum and snare in turn on the beats, the downbeat accented."""
    events = [(t, t + 0.05, DRUM_CHANNEL, 42, 56 if quarters % 1 == 0 else 40)]  # closed hi-hat
    if quarters % 1 == 0:
        kick = int(quarters) % 2 == 0
        velocity = 96 if quarters % bar == 0 else (80 if kick else 60)
        events.append((t, t + 0.15, DRUM_CHANNEL, 36 if kick else 38, velocity))  # bass drum or snare
    return events


DRUM_PATTERNS = {"march": _march_beat, "dance": _dance_beat}


def drum_events(clip: Clip, score, duration: float = DURATION) -> list[Event]:
    """``clip.drums``'s pattern over ``duration`` seconds, one step per eighth, after a crash cymbal."""
    from music21 import meter

    ts = score.recurse().getElementsByClass(meter.TimeSignature).first()
    bar = float(ts.barDuration.quarterLength) if ts else 2.0
    eighth = 30.0 / clip.bpm
    events: list[Event] = [(0.0, 1.0, DRUM_CHANNEL, 49, 64)]  # crash cymbal on the first beat
    for k in range(int(duration / eighth)):
        events += DRUM_PATTERNS[clip.drums](k * eighth, k * 0.5, bar)
    return events


def events_of(clip: Clip, score, duration: float = DURATION) -> list[Event]:
    """The notes (and drums) of ``clip`` in ``score`` over ``duration`` seconds, from time 0, sorted."""
    events = note_events(clip, score, duration) + (drum_events(clip, score, duration) if clip.drums else [])
    if not events:
        raise ExampleError(f"{clip.work}: no notes from quarter {clip.start} on")
    first = min(e[0] for e in events)
    return sorted((s - first, e - first, c, p, v) for s, e, c, p, v in events)


# ---------------------------------------------------------------- note events -> MIDI -> audio


def _varlen(n: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [n & 0x7F]
    while n := n >> 7:
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_bytes(events: list[Event], programs: tuple[int, ...]) -> bytes:
    """A format-0 standard MIDI file: tempo, one program per channel, then the notes."""
    ticks_per_s = TICKS_PER_QUARTER * 1e6 / MIDI_TEMPO_US
    msgs = [(0, 0, b"\xff\x51\x03" + MIDI_TEMPO_US.to_bytes(3, "big"))]
    msgs += [(0, 1, bytes([0xC0 | ch, program])) for ch, program in enumerate(programs)]
    for start, end, ch, pitch, velocity in events:
        msgs.append((round(start * ticks_per_s), 3, bytes([0x90 | ch, pitch, velocity])))
        msgs.append((round(end * ticks_per_s), 2, bytes([0x80 | ch, pitch, 0])))  # note-offs before note-ons
    track, now = bytearray(), 0
    for tick, _, data in sorted(msgs):
        track += _varlen(tick - now) + data
        now = tick
    track += b"\x00\xff\x2f\x00"  # end of track
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def render_midi(exe: str, soundfont: Path, midi: bytes) -> np.ndarray:
    """FluidSynth's rendering of ``midi`` at ``RENDER_RATE``: mono float32 (n,)."""
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "clip.mid", Path(tmp) / "clip.wav"
        mid.write_bytes(midi)
        cmd = [exe, "-n", "-i", "-q", "-C", "0", "-R", "1", "-g", "0.5", "-r", str(RENDER_RATE), "-O", "float",
               "-T", "wav", "-F", str(wav), str(soundfont), str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not wav.is_file():
            raise ExampleError(f"fluidsynth failed: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
        data, _ = sf.read(str(wav), dtype="float32", always_2d=True)
    return data.mean(axis=1)


def fade(out: np.ndarray) -> np.ndarray:
    """``out`` (float32, at ``SAMPLE_RATE``) faded in over ``FADE_IN_S`` and out over ``FADE_OUT_S``, in place."""
    fade_in, fade_out = int(FADE_IN_S * SAMPLE_RATE), min(len(out), int(FADE_OUT_S * SAMPLE_RATE))
    out[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)[: len(out)]
    out[len(out) - fade_out:] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    return out


def normalise(out: np.ndarray) -> np.ndarray:
    """``out`` scaled to peak ``PEAK``; raises :class:`ExampleError` when it is silent."""
    peak = float(np.abs(out).max()) if len(out) else 0.0
    if peak < 1e-4:
        raise ExampleError("fluidsynth rendered silence")
    return out * (PEAK / peak)


def finish(wave: np.ndarray) -> np.ndarray:
    """Resampled to ``SAMPLE_RATE``, cut or padded to ``DURATION``, faded at both ends, peak ``PEAK``."""
    n = int(DURATION * SAMPLE_RATE)
    out = np.zeros(n, dtype=np.float32)
    wave = resample(wave, RENDER_RATE, SAMPLE_RATE)[:n]
    out[: len(wave)] = wave
    return normalise(fade(out))


def render(clip: Clip, exe: str, soundfont: Path) -> np.ndarray:
    """The finished clip: mono float32 at ``SAMPLE_RATE``, ``DURATION`` seconds long."""
    return finish(render_midi(exe, soundfont, midi_bytes(events_of(clip, load_score(clip)), clip.programs)))


# ---------------------------------------------------------------- the command


def make_music_examples(output: Path, clips: list[Clip]) -> list[dict]:
    """Write one WAV per clip into ``output``; one row of facts per clip."""
    exe, soundfont = find_tools()
    rows = []
    for clip in clips:
        path = save_wav(output / f"{clip.name}.wav", render(clip, exe, soundfont), SAMPLE_RATE)
        rows.append(facts(path) | {"about": clip.about})
    return rows


def facts(path: Path) -> dict:
    """Rate, duration, peak and RMS level (dBFS) and size of a WAV file."""
    wave, sr = sf.read(str(path), dtype="float64")
    return dict(file=path.name, sr=sr, duration=len(wave) / sr, peak_db=20 * np.log10(np.abs(wave).max()),
                rms_db=10 * np.log10(np.mean(wave**2)), kb=path.stat().st_size / 1000)


def check(output: Path, clips: list[Clip]) -> list[str]:
    """Re-render ``clips`` and compare with the files in ``output``; a line per clip that differs."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        make_music_examples(Path(tmp), clips)
        for clip in clips:
            old, new = output / f"{clip.name}.wav", Path(tmp) / f"{clip.name}.wav"
            if not old.is_file():
                problems.append(f"{old} is missing")
                continue
            a, b = sf.read(str(old), dtype="float32")[0], sf.read(str(new), dtype="float32")[0]
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
            if diff > CHECK_TOLERANCE:
                problems.append(f"{old} differs from a fresh rendering (largest difference {diff:.5f})")
    return problems


def table(rows: list[dict]) -> str:
    lines = [f"{'file':<28} {'Hz':>6} {'dur s':>6} {'peak dB':>8} {'rms dB':>7} {'kB':>6}  about"]
    lines += [f"{r['file']:<28} {r['sr']:>6} {r['duration']:>6.2f} {r['peak_db']:>8.2f} {r['rms_db']:>7.1f} "
              f"{r['kb']:>6.0f}  {r['about']}" for r in rows]
    lines.append(f"{len(rows)} clips, {sum(r['kb'] for r in rows):.0f} kB in all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    by_name = {c.name: c for c in CLIPS}
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", "--out", type=Path, default=DEFAULT_OUTPUT,
                    help=f"folder to write (default: {DEFAULT_OUTPUT})")
    ap.add_argument("--clips", nargs="+", choices=list(by_name), default=list(by_name), metavar="NAME",
                    help=f"clips to render (default: all): {', '.join(by_name)}")
    ap.add_argument("--check", action="store_true",
                    help="write nothing: re-render and exit 1 when the files in --output differ")
    args = ap.parse_args(argv)
    clips = [by_name[n] for n in args.clips]
    try:
        if args.check:
            problems = check(args.output, clips)
            print("\n".join(problems) or f"{len(clips)} clips in {args.output} match a fresh rendering")
            return 1 if problems else 0
        rows = make_music_examples(args.output, clips)
    except ExampleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(rows))
    print(f"wrote {len(rows)} files to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
