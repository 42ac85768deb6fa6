"""Render a music corpus for training from the freely licensed scores that come with music21.

Each file is one work (or movement, or tune) of the music21 corpus, played from its start for at most
``--max-seconds-per-file`` seconds by the same rendering path as the example clips
(``scripts/make_music_examples.py``: score -> note events -> MIDI -> FluidSynth with the FluidR3 General MIDI
soundfont), resampled to 22,050 Hz mono (the ``music`` presets' rate), trimmed of leading and trailing silence,
faded at both ends, peak-normalised to 0.9 and written as 16-bit WAV in the GTZAN folder layout
``<style>/<file>.wav``, so the folder's names are the labels:

    chorale       Bach's four-part chorales on organ, choir, strings, brass or woodwinds
    quartet       string quartet movements (Haydn, Mozart, Beethoven, R. Schumann) on strings or woodwinds
    piano         piano music and songs (Bach, C. P. E. Bach, Mozart, Schubert, Chopin, the Schumanns, Verdi,
                  Liliuokalani, Joplin, Beach, Schoenberg) on acoustic, electric or honky-tonk piano, harpsichord
    renaissance   madrigals (Monteverdi books 3 and 4, Lusitano) on choir, recorders, viols or organ
    folk          fiddle tunes (Ryan's Mammoth Collection, O'Neill's) with their repeats on fiddle, flute,
                  accordion, guitar, banjo, harmonica or whistle; some with a dance beat on drums
    march         American fife tunes with their repeats on fife, flute, trumpet, brass or clarinet, with drums

The works of each style are taken in a seeded random order until the style holds ``--minutes-per-style``
minutes (a style whose works run out holds less, and the summary says so). Each file's instruments (General MIDI
programs), tempo (the style's tempo times a factor in 0.9-1.1) and drums are chosen from a random generator
seeded with ``--seed`` and the work, so a file is the same whichever styles and sizes are asked for. Encodings
with restrictions are left out (the Essen folk songs: non-commercial use only; the Palestrina masses: rights
reserved by their encoder; Monteverdi's book 5: an edition's copyright notice). A score that fails to parse or
render is skipped with a one-line reason, and the run goes on. With ``--jobs N`` up to N pieces are rendered at
once, in the same order, so the corpus does not depend on N.

``corpus.json`` in the output folder lists every file with its source (music21 corpus path and tune number),
title, ensemble, programs per part, tempo, drums, duration and licence note, and the skipped scores with their
reasons. A run that finds a file already listed there with the same settings keeps it, so an interrupted run
resumes where it stopped; WAVs and ``corpus.json`` are written to a temporary file and renamed. Files of an
earlier run that the styles asked for no longer include are removed. The output is deterministic for one
FluidSynth, soundfont and music21 version. The corpus is not part of the repository (``data/`` is git-ignored).

Run from the repository root::

    .venv/bin/python scripts/make_music_corpus.py                       # 10 min per style -> data/corpus/music21
    .venv/bin/python scripts/make_music_corpus.py --styles folk march --minutes-per-style 30 --jobs 2
    .venv/bin/python scripts/make_music_corpus.py --output /tmp/c --max-seconds-per-file 30 --seed 1

It needs ``fluidsynth`` and the FluidR3 soundfont (Debian/Ubuntu: ``apt-get install fluidsynth
fluid-soundfont-gm``) and the ``music21`` package (in requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import make_music_examples as render  # the shared rendering path (this script's folder is on sys.path)
import numpy as np
import soundfile as sf

from preprocessing.audio import resample
from preprocessing.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "data" / "corpus" / "music21"
MANIFEST = "corpus.json"
SAMPLE_RATE = PRESETS["music"].sample_rate  # 22,050 Hz
RENDER_VERSION = 1  # part of every file's settings: raise it when the rendering changes, to render files again
TEMPO_RANGE = (0.9, 1.1)  # per-file factor on the style's tempo
SILENCE_DB = -60.0  # leading and trailing audio this far below the peak is trimmed
MIN_SECONDS = 1.0  # shorter renderings are skipped
MAX_PARTS = 9  # MIDI channels 1-9 (channel 10 is the drum kit); further parts are left out
LIMITS = {"minutes": (0.01, 600.0), "seconds": (1.0, 600.0), "jobs": (1, 32), "seed": (0, 2**32 - 1)}
SCORE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".abc")  # in order of preference for one work
BYTES_PER_SECOND = SAMPLE_RATE * 2  # 16-bit mono
SAFE_FILE = re.compile(r"[a-z_]+/[A-Za-z0-9._-]+\.wav")  # <style>/<name>.wav, as file_name() writes
SHARED_NUMBERING = ("oneills1850/",)  # ABC collections whose files share one numbering: a number is one tune


@dataclass(frozen=True)
class Ensemble:
    """Instruments for a score: General MIDI programs from the top part to the bass, spread over its parts."""

    name: str
    programs: tuple[int, ...]
    transpose: int = 0  # semitones


@dataclass(frozen=True)
class Style:
    """One folder of the corpus: which works of the music21 corpus, and how to play them."""

    name: str
    sources: tuple[str, ...]  # music21 corpus path prefixes
    ensembles: tuple[Ensemble, ...]
    bpm: float  # quarter notes per minute, before the per-file tempo factor
    exclude: tuple[str, ...] = ()  # path prefixes left out
    drums: str = ""  # make_music_examples.DRUM_PATTERNS key
    drum_share: float = 0.0  # the fraction of files that get drums
    repeats: bool = False  # play written repeats (short tunes)
    max_tune: int | None = None  # highest tune number taken from an ABC collection


E = Ensemble
STRING_QUARTET, WOODWIND_QUARTET = E("string quartet", (40, 40, 41, 42)), E("woodwinds", (73, 68, 71, 70))
STYLES = (
    Style("chorale", ("bach/bwv",), (E("church organ", (19,)), E("choir", (52,)), E("strings", (48,)),
                                     E("brass", (56, 60, 57, 58)), WOODWIND_QUARTET), 72,
          exclude=("bach/bwv846",)),
    Style("quartet", ("beethoven/", "haydn/", "mozart/k155", "mozart/k156", "mozart/k458", "mozart/k80",
                      "schumann_robert/opus41no1"), (STRING_QUARTET, E("string ensemble", (48,)),
                                                     E("slow strings", (49,)), WOODWIND_QUARTET), 120),
    Style("piano", ("bach/bwv846", "beach/", "chopin/", "cpebach/h186.mxl", "joplin/", "liliuokalani/",
                    "mozart/k545", "schoenberg/", "schubert/", "schumann_clara/polonaise", "schumann_robert/opus48no2",
                    "verdi/"), (E("grand piano", (0,)), E("bright piano", (1,)), E("electric grand", (2,)),
                                E("honky-tonk piano", (3,)), E("electric piano", (4,)), E("harpsichord", (6,))), 100),
    Style("renaissance", ("monteverdi/madrigal.3.", "monteverdi/madrigal.4.", "lusitano/"),
          (E("choir", (52,)), E("voices", (53,)), E("recorders", (74,)), E("viols", (40, 41, 42)),
           E("organ", (20,))), 112),
    Style("folk", ("ryansMammoth/", "oneills1850/"), (E("fiddle", (110,)), E("flute", (73,)), E("accordion", (21,)),
                                                      E("guitar", (24,), 12), E("banjo", (105,)),
                                                      E("harmonica", (22,)), E("whistle", (78,))), 180,
          drums="dance", drum_share=0.3, repeats=True),
    Style("march", ("miscFolk/americanfifeopus",), (E("fife", (72,), -12), E("flute", (73,), -12),
                                                    E("trumpet", (56,), -12), E("brass", (61,), -12),
                                                    E("clarinet", (71,), -12)), 112,
          drums="march", drum_share=1.0, repeats=True, max_tune=99),  # 101-: the same tunes, unedited
)
BY_NAME = {s.name: s for s in STYLES}
LICENCES = {  # music21 corpus folder -> licence note; others get DEFAULT_LICENCE
    "ryansMammoth": "traditional tune printed in Ryan's Mammoth Collection (1883), public domain; "
                    "ABC transcription from the music21 corpus",
    "oneills1850": "traditional Irish tune printed in O'Neill's Music of Ireland (1903), public domain; "
                   "ABC transcription from the music21 corpus",
    "miscFolk": "traditional fife tune, public domain; ABC transcription (Jack Campin) from the music21 corpus",
    "lusitano": "public-domain work; encoding CC0 (M. S. A. Cuthbert) from the music21 corpus",
}
DEFAULT_LICENCE = ("public-domain work; score encoding from the music21 corpus, used under its terms "
                   "(music21/corpus/license.txt)")


class CorpusError(Exception):
    """The corpus cannot be made (a tool missing, too little disk space, an unreadable corpus.json)."""


# ---------------------------------------------------------------- what to render


@dataclass(frozen=True)
class Piece:
    """One file to render; every field is a setting recorded in corpus.json and compared on a re-run."""

    style: str
    source: str  # music21 corpus path
    number: int | None  # tune number within an ABC collection
    file: str  # <style>/<name>.wav
    ensemble: str
    voices: tuple[int, ...]  # the ensemble's programs, spread over the score's parts
    transpose: int
    tempo_factor: float
    bpm: float
    drums: str
    repeats: bool
    max_seconds: float
    render_version: int = RENDER_VERSION


def file_name(style: str, source: str, number: int | None) -> str:
    """``<style>/<corpus path without suffix, '/' as '_'>[-<number>].wav``, in safe characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.rsplit(".", 1)[0].replace("/", "_"))
    return f"{style}/{stem}{'' if number is None else f'_tune{number}'}.wav"


def piece_for(style: Style, source: str, number: int | None, seed: int, max_seconds: float) -> Piece:
    """The settings of one work, drawn from a generator seeded with ``seed`` and the work alone."""
    rng = random.Random(f"{seed}/{style.name}/{source}/{number}")
    ensemble = rng.choice(style.ensembles)
    factor = round(rng.uniform(*TEMPO_RANGE), 3)
    drums = style.drums if rng.random() < style.drum_share else ""
    return Piece(style.name, source, number, file_name(style.name, source, number), ensemble.name,
                 ensemble.programs, ensemble.transpose, factor, round(style.bpm * factor, 2), drums, style.repeats,
                 max_seconds)


@lru_cache(maxsize=1)
def corpus_files() -> tuple[str, ...]:
    """Every score file of music21's core corpus, as a corpus path (``bach/bwv66.6.mxl``), sorted."""
    from music21 import common, corpus

    root = Path(common.getCorpusFilePath())
    return tuple(sorted(Path(p).relative_to(root).as_posix() for p in corpus.getCorePaths()))


def tune_numbers(path: str) -> list[int | None]:
    """The tune numbers (``X:`` fields) of an ABC collection; ``[None]`` for a file of one tune or another format."""
    if not path.endswith(".abc"):
        return [None]
    from music21 import common

    text = (Path(common.getCorpusFilePath()) / path).read_text(encoding="latin-1")
    numbers = [int(n) for n in re.findall(r"^X:\s*(\d+)", text, flags=re.MULTILINE)]
    return numbers if len(numbers) > 1 else [None]


def works_of(style: Style) -> list[tuple[str, int | None]]:
    """The style's works (corpus path, tune number), one score file per work, the preferred format first."""
    chosen: dict[tuple[str, int | None], tuple[int, str]] = {}
    for path in corpus_files():
        suffix = Path(path).suffix.lower()
        if suffix not in SCORE_SUFFIXES or not path.startswith(style.sources) or path.startswith(style.exclude):
            continue
        for number in tune_numbers(path):
            if number is not None and style.max_tune is not None and number > style.max_tune:
                continue
            shared = number is not None and path.startswith(SHARED_NUMBERING)
            key, rank = (path.split("/")[0] if shared else path[: -len(suffix)], number), SCORE_SUFFIXES.index(suffix)
            if key not in chosen or rank < chosen[key][0]:
                chosen[key] = (rank, path)
    return sorted((path, key[1]) for key, (_, path) in chosen.items())


def plan(style: Style, seed: int, max_seconds: float) -> list[Piece]:
    """The style's pieces in the order they are taken: the works shuffled by ``seed``."""
    works = works_of(style)
    random.Random(f"{seed}/{style.name}").shuffle(works)
    return [piece_for(style, source, number, seed, max_seconds) for source, number in works]


# ---------------------------------------------------------------- rendering one piece (in a worker process)


@dataclass
class Outcome:
    """A rendered piece (its audio and its corpus.json entry), or the reason it was skipped."""

    piece: Piece
    entry: dict | None = None
    wave: np.ndarray | None = None
    reason: str = ""
    new: bool = True


def spread(programs: tuple[int, ...], n_parts: int) -> tuple[int, ...]:
    """One program per part: the first for the top part, the last for the bass, the others in between."""
    if n_parts <= 1:
        return programs[:1]
    return tuple(programs[round(i * (len(programs) - 1) / (n_parts - 1))] for i in range(n_parts))


def trim(wave: np.ndarray, db: float = SILENCE_DB) -> np.ndarray:
    """``wave`` without its leading and trailing samples quieter than ``db`` below its peak."""
    loud = np.flatnonzero(np.abs(wave) > np.abs(wave).max(initial=0.0) * 10 ** (db / 20))
    return wave[loud[0]: loud[-1] + 1] if len(loud) else wave[:0]


def finish_piece(wave: np.ndarray, max_seconds: float) -> np.ndarray:
    """FluidSynth's output resampled to ``SAMPLE_RATE``, trimmed, cut to ``max_seconds``, faded, normalised."""
    out = trim(resample(wave, render.RENDER_RATE, SAMPLE_RATE))[: int(max_seconds * SAMPLE_RATE)]
    return render.normalise(render.fade(np.ascontiguousarray(out, dtype=np.float32)))


def _score_of(piece: Piece):
    """The music21 score of ``piece``, with its repeats written out when the piece plays them."""
    score = render.load_score(render.Clip(piece.file, piece.source, "", "", (), 0, number=piece.number))
    if not hasattr(score, "parts") or not score.parts:
        raise render.ExampleError("no parts in the score")
    if piece.repeats:
        try:
            score = score.expandRepeats()
        except Exception:  # music21 cannot expand some repeat structures: play the score as written
            pass
    return score


def _reason(e: Exception) -> str:
    """The exception's type and the first line of its message."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def render_piece(piece: Piece) -> Outcome:
    """Parse, play and finish one piece; never raises (a failure is the outcome's ``reason``)."""
    exe, soundfont = render.find_tools()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = _score_of(piece)
        programs = spread(piece.voices, min(len(score.parts), MAX_PARTS))
        clip = render.Clip(piece.file, piece.source, "", "", programs, piece.bpm, number=piece.number,
                           transpose=piece.transpose, drums=piece.drums)
        length = float(score.highestTime) * 60.0 / piece.bpm
        events = render.events_of(clip, score, min(piece.max_seconds, length))
        wave = finish_piece(render.render_midi(exe, soundfont, render.midi_bytes(events, programs)),
                            piece.max_seconds)
    except Exception as e:  # any failure of one score skips it, and the run goes on
        return Outcome(piece, reason=_reason(e))
    if len(wave) < MIN_SECONDS * SAMPLE_RATE:
        return Outcome(piece, reason=f"only {len(wave) / SAMPLE_RATE:.2f} s of sound")
    meta = score.metadata
    entry = asdict(piece) | {
        "title": (meta.bestTitle if meta else None) or "", "composer": (meta.composer if meta else None) or "",
        "programs": list(programs), "parts": len(score.parts), "seconds": round(len(wave) / SAMPLE_RATE, 3),
        "licence": LICENCES.get(piece.source.split("/")[0], DEFAULT_LICENCE)}
    return Outcome(piece, entry=entry, wave=wave)


# ---------------------------------------------------------------- files


def write_wav(path: Path, wave: np.ndarray) -> int:
    """Write ``wave`` as 16-bit mono WAV at ``SAMPLE_RATE`` via a temporary file and a rename; its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
    return path.stat().st_size


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def jsonable(piece: Piece) -> dict:
    """``piece``'s settings as they read back from JSON (lists for tuples)."""
    return json.loads(json.dumps(asdict(piece)))


def load_manifest(output: Path) -> tuple[dict[str, dict], list[dict]]:
    """The files (by name) and skipped scores listed in ``output/corpus.json``; empty when there is none."""
    path = output / MANIFEST
    if not path.is_file():
        return {}, []
    try:
        data = json.loads(path.read_text())
        files, skipped = {e["file"]: e for e in data["files"]}, list(data["skipped"])
        bad = [f for f in [*files, *(s["file"] for s in skipped)] if not SAFE_FILE.fullmatch(f)]
    except (ValueError, KeyError, TypeError) as e:
        bad = [f"{type(e).__name__}: {e}"]
    if bad:
        raise CorpusError(f"{path} is not a corpus.json written by this script ({bad[0]}); remove it or pick "
                          "another --output")
    return files, skipped


def _matches(entry: dict, settings: dict) -> bool:
    return all(entry.get(k) == v for k, v in settings.items())


@dataclass
class Corpus:
    """The output folder's listing of files and skipped scores, saved to corpus.json after every change."""

    output: Path
    header: dict
    files: dict[str, dict] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    def save(self) -> None:
        files = sorted(self.files.values(), key=lambda e: e["file"])
        skipped = sorted(self.skipped, key=lambda e: e["file"])
        write_json(self.output / MANIFEST, self.header | {"files": files, "skipped": skipped})

    def known(self, piece: Piece) -> Outcome | None:
        """The outcome of an earlier run with ``piece``'s settings: its file, or its reason to skip."""
        settings, entry = jsonable(piece), self.files.get(piece.file)
        path = self.output / piece.file
        if entry and _matches(entry, settings) and path.is_file() and path.stat().st_size == entry.get("bytes"):
            return Outcome(piece, entry=entry, new=False)
        reasons = [s["reason"] for s in self.skipped if _matches(s, settings)]
        return Outcome(piece, reason=reasons[0], new=False) if reasons else None

    def add(self, outcome: Outcome) -> None:
        """Write a new file (or note a skipped score) and list it."""
        if not outcome.new:
            return
        piece = outcome.piece
        self.skipped = [s for s in self.skipped if s["file"] != piece.file]
        if outcome.entry is None:
            self.files.pop(piece.file, None)
            self.skipped.append(asdict(piece) | {"reason": outcome.reason})
        else:
            self.files[piece.file] = outcome.entry | {"bytes": write_wav(self.output / piece.file, outcome.wave)}
        self.save()

    def prune(self, style: str, keep: set[str], failed: set[str]) -> int:
        """Remove the style's files of earlier runs that are not in ``keep``, and its skip notes not in ``failed``;
        how many files."""
        gone = [f for f, e in self.files.items() if e["style"] == style and f not in keep]
        for name in gone:
            (self.output / name).unlink(missing_ok=True)
            del self.files[name]
        self.skipped = [s for s in self.skipped if s["style"] != style or s["file"] in failed]
        for part in (self.output / style).glob("*.part"):  # left by an interrupted run
            part.unlink()
        self.save()
        return len(gone)


# ---------------------------------------------------------------- the run


@dataclass
class StyleReport:
    style: str
    target_s: float
    files: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)  # the files of the skipped scores
    seconds: float = 0.0
    new: int = 0
    skipped: int = 0
    removed: int = 0

    def count(self, outcome: Outcome) -> None:
        """Tally ``outcome`` and print a line for a new file or a skipped score."""
        piece = outcome.piece
        if outcome.entry is None:
            self.skipped += 1
            self.failed.add(piece.file)
            tune = "" if piece.number is None else f" (tune {piece.number})"
            print(f"skip {piece.source}{tune}: {outcome.reason}{'' if outcome.new else ' (as in an earlier run)'}",
                  flush=True)
            return
        self.files.add(piece.file)
        self.seconds += outcome.entry["seconds"]
        if outcome.new:
            self.new += 1
            drums = f" + {piece.drums} drums" if piece.drums else ""
            print(f"{piece.file:<48} {outcome.entry['seconds']:5.1f} s  {piece.ensemble}{drums}, "
                  f"tempo x{piece.tempo_factor:.3f}", flush=True)


def _enough(seconds: float, window: deque, target_s: float) -> bool:
    """Whether ``seconds`` and the files of earlier runs waiting in ``window`` reach ``target_s``."""
    return seconds + sum(j.entry["seconds"] for j in window if isinstance(j, Outcome) and j.entry) >= target_s


def run_style(style: Style, pieces: list[Piece], target_s: float, corpus: Corpus,
              submit: Callable[[Piece], Outcome | Future], jobs: int) -> StyleReport:
    """Take the style's pieces in order until they hold ``target_s`` seconds, ``jobs`` renderings at a time."""
    report, window, todo = StyleReport(style.name, target_s), deque(), iter(pieces)
    while report.seconds < target_s:
        while len(window) < jobs and not _enough(report.seconds, window, target_s) and (
                piece := next(todo, None)) is not None:
            window.append(corpus.known(piece) or submit(piece))
        if not window:
            break  # the style's works ran out
        job = window.popleft()
        outcome = job if isinstance(job, Outcome) else job.result()
        corpus.add(outcome)
        report.count(outcome)
    for job in window:  # renderings beyond the target: not needed
        if isinstance(job, Future):
            job.cancel()
    report.removed = corpus.prune(style.name, report.files, report.failed)
    return report


def make_corpus(corpus: Corpus, styles: list[Style], minutes: float, max_seconds: float, seed: int,
                jobs: int) -> list[StyleReport]:
    """Render every style into ``corpus.output``, in ``jobs`` processes (here when 1)."""
    if jobs == 1:
        return [run_style(s, plan(s, seed, max_seconds), minutes * 60, corpus, render_piece, 1) for s in styles]
    # spawn: fresh workers, safe whatever threads this process has started
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return [run_style(s, plan(s, seed, max_seconds), minutes * 60, corpus,
                              lambda p: pool.submit(render_piece, p), jobs) for s in styles]
        finally:
            pool.shutdown(cancel_futures=True)


def open_corpus(output: Path, args: argparse.Namespace, soundfont: Path, exe: str) -> Corpus:
    """The corpus in ``output`` (created), with what an earlier run listed there."""
    import music21

    files, skipped = load_manifest(output)
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    header = {"about": "music rendered from the music21 corpus by scripts/make_music_corpus.py; see its docstring",
              "music21": music21.__version__, "fluidsynth": (version.splitlines() or [""])[0],
              "soundfont": soundfont.name, "sample_rate": SAMPLE_RATE, "peak": render.PEAK,
              "render_version": RENDER_VERSION,
              "last_run": {"styles": args.styles, "minutes_per_style": args.minutes_per_style,
                           "max_seconds_per_file": args.max_seconds_per_file, "seed": args.seed}}
    output.mkdir(parents=True, exist_ok=True)
    return Corpus(output, header, files, skipped)


def check_space(output: Path, n_styles: int, minutes: float, max_seconds: float) -> None:
    """Raise :class:`CorpusError` when the disk holding ``output`` cannot take the largest corpus asked for."""
    need = n_styles * (minutes * 60 + max_seconds) * BYTES_PER_SECOND
    where = next(p for p in (output.resolve(), *output.resolve().parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need > free:
        raise CorpusError(f"the corpus takes up to {need / 1e6:.0f} MB and {where} has {free / 1e6:.0f} MB free; "
                          "ask for fewer minutes or styles")


# ---------------------------------------------------------------- the command


def summary(reports: list[StyleReport], corpus: Corpus, elapsed: float) -> str:
    lines = [f"{'style':<12} {'files':>5} {'minutes':>8} {'new':>5} {'skipped':>7}"]
    lines += [f"{r.style:<12} {len(r.files):>5} {r.seconds / 60:>8.1f} {r.new:>5} {r.skipped:>7}" for r in reports]
    total_s = sum(r.seconds for r in reports)
    lines.append(f"{'all':<12} {sum(len(r.files) for r in reports):>5} {total_s / 60:>8.1f} "
                 f"{sum(r.new for r in reports):>5} {sum(r.skipped for r in reports):>7}")
    lines += [f"note: {r.style} holds only {r.seconds / 60:.1f} of {r.target_s / 60:g} minutes: the music21 corpus "
              "has no more of it" for r in reports if r.seconds < r.target_s]
    lines += [f"removed {r.removed} files of an earlier run from {r.style}/" for r in reports if r.removed]
    size = sum(e["bytes"] for e in corpus.files.values())
    lines.append(f"{len(corpus.files)} files ({size / 1e6:.1f} MB) listed in {corpus.output / MANIFEST}; "
                 f"this run took {elapsed:.0f} s")
    return "\n".join(lines)


def _bounded(kind: str, convert: Callable[[str], float], unit: str) -> Callable[[str], float]:
    """An argparse type: ``convert``ed text within ``LIMITS[kind]``."""
    lo, hi = LIMITS[kind]

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not lo <= value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be from {lo:g} to {hi:g}{unit}, not {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", "--out", type=Path, default=DEFAULT_OUTPUT, help=f"folder (default: {DEFAULT_OUTPUT})")
    ap.add_argument("--styles", nargs="+", choices=list(BY_NAME), default=list(BY_NAME), metavar="STYLE",
                    help=f"styles to render (default: all): {', '.join(BY_NAME)}")
    ap.add_argument("--minutes-per-style", type=_bounded("minutes", float, " minutes"), default=10.0,
                    help="audio per style, in minutes (default: 10)")
    ap.add_argument("--max-seconds-per-file", type=_bounded("seconds", float, " seconds"), default=60.0,
                    help="longer pieces are cut (default: 60)")
    ap.add_argument("--seed", type=_bounded("seed", int, ""), default=0,
                    help="chooses the works, instruments and tempi (default: 0)")
    ap.add_argument("--jobs", type=_bounded("jobs", int, " processes"), default=1,
                    help="renderings in parallel processes (default: 1)")
    args = ap.parse_args(argv)
    args.styles = list(dict.fromkeys(args.styles))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, styles = time.monotonic(), [BY_NAME[n] for n in args.styles]
    try:
        exe, soundfont = render.find_tools()
        check_space(args.output, len(styles), args.minutes_per_style, args.max_seconds_per_file)
        corpus = open_corpus(args.output, args, soundfont, exe)
        reports = make_corpus(corpus, styles, args.minutes_per_style, args.max_seconds_per_file, args.seed,
                              args.jobs)
    except (render.ExampleError, CorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(reports, corpus, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
