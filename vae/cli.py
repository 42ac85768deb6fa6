"""Command line: ``python -m vae <verb>`` over the same library the app uses.

Verbs: preprocess, train, reconstruct, sample, evaluate, export. Each has ``--help``. Long work shows
a tqdm bar on stderr; errors the user can fix (:class:`~preprocessing.errors.UserError`) print one line
``error: ...`` and exit with status 2; any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from preprocessing.audio import AudioError, load_audio, save_wav
from preprocessing.config import PRESETS, ConfigError, preset
from preprocessing.errors import InputError, UserError
from preprocessing.parallel import MAX_WORKERS, check_workers, usable_cpus
from preprocessing.progress import ProgressFn
from preprocessing.store import MAX_STORE_BYTES, PARALLEL_MIN_BYTES, Store, build_store, check_test_fraction, find_audio

from . import distributed
from .accel import PRECISIONS
from .checkpoint import export_checkpoint, load_checkpoint, load_config
from .conditioning import CONDITIONS
from .config import ARCHS
from .evaluate import evaluate
from .events import EventLog
from .generate import MAX_SAMPLE_COUNT, decode, reconstruct_audio, sample, to_wave
from .train import OVERRIDES, TrainEvent, pick_device, train


def _bar(desc: str, unit: str = "file") -> tuple[tqdm, ProgressFn]:
    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(name[-40:], refresh=False)
        bar.refresh()

    return bar, update


def cmd_preprocess(a: argparse.Namespace) -> int:
    cfg = preset(a.preset).replace(
        sample_rate=a.sample_rate, duration=a.duration, n_fft=a.n_fft, hop_length=a.hop,
        normalisation=a.normalisation, windowing=a.windowing, top_db=a.top_db,
    )
    fraction, max_bytes = check_test_fraction(a.test_fraction), _max_bytes(a.max_store_gb)  # before the bar shows
    if a.workers is not None:
        check_workers(a.workers, "--workers")
    bar, update = _bar("preprocess")
    with bar:
        summary = build_store(a.input, a.output, cfg, progress=update, test_fraction=fraction,
                              reuse=not a.force, max_bytes=max_bytes, workers=a.workers)
    print(summary.to_text())
    print(f"store written to {a.output}" if not summary.reused else f"store {a.output} reused (input unchanged)")
    return 0


TRAIN_FLAGS = {"time_limit_s": "--time-limit"}  # override -> flag, where the flag is not --name-with-dashes


def train_argv(data: str | Path, output: str | Path, arch: str | None = None, resume: bool = False,
               threads: int | None = None, condition: str | None = None, **overrides: Any) -> list[str]:
    """The ``train`` verb's arguments (after ``python -m vae``) for a run with these training overrides
    (:data:`vae.train.OVERRIDES`) and ``condition`` ("label": a conditional model): what the app starts, so
    that it runs what a user would type."""
    unknown = sorted(set(overrides) - OVERRIDES)
    if unknown:
        raise ConfigError(f"unknown training parameters: {unknown}")
    argv = ["train", "--data", str(data), "--output", str(output)]
    argv += ["--arch", arch] if arch else []
    argv += ["--resume"] if resume else []
    argv += ["--threads", str(int(threads))] if threads else []
    argv += ["--condition", condition] if condition else []
    for key, value in overrides.items():
        flag = TRAIN_FLAGS.get(key, "--" + key.replace("_", "-"))
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _show(bar: tqdm, ev: TrainEvent, shown: float) -> float:
    """Show ``ev`` on the bar (steps at most every ``bar.mininterval`` s) or as a line; when it was shown."""
    if ev.kind != "step":
        if ev.kind == "epoch":
            bar.write(f"epoch {ev.epoch}/{ev.epochs}: train loss {ev.losses['loss']:.4g} "
                      f"(recon {ev.losses['recon']:.4g}, kl {ev.losses['kl']:.3g}) | "
                      f"val loss {ev.val['loss']:.4g} (recon {ev.val['recon']:.4g}) | "
                      f"{ev.samples_per_s:.0f} samples/s")
        else:
            bar.write(f"{ev.kind}: {ev.message} (checkpoint {ev.checkpoint})")
        return shown
    now = time.monotonic()
    if now - shown < bar.mininterval and ev.step != ev.steps:
        return shown
    bar.total = ev.steps * ev.epochs
    bar.n = ev.epoch * ev.steps + ev.step
    bar.set_postfix(epoch=f"{ev.epoch + 1}/{ev.epochs}", loss=f"{ev.losses['loss']:.4g}",
                    recon=f"{ev.losses['recon']:.4g}", kl=f"{ev.losses['kl']:.3g}",
                    sps=f"{ev.samples_per_s:.0f}", refresh=False)
    bar.refresh()
    return now


def _history(output: Path, resume: bool) -> list[dict[str, Any]]:
    """The epochs trained before, from ``output/last`` when resuming (training itself reports a bad one)."""
    try:
        return list(load_config(output / "last").meta.get("history", [])) if resume else []
    except UserError:
        return []


def _max_bytes(gb: float) -> int:
    if not 0 < gb < 2**40:  # NaN fails too
        raise ConfigError(f"--max-store-gb must be a positive number of GB, got {gb}")
    return int(gb * 2**30)


def cmd_train(a: argparse.Namespace) -> int:
    """Train, reporting on a tqdm bar and in ``OUTPUT/events.jsonl`` (:mod:`vae.events`). SIGINT (Ctrl-C)
    and SIGTERM save ``OUTPUT/last`` and stop (their handlers are restored after); under torchrun only rank 0
    writes the log."""
    Store(a.data)  # a missing or damaged store is refused before the run folder and its log are made
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = {k: getattr(a, k) for k in sorted(OVERRIDES) if getattr(a, k, None) is not None}
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    output = Path(a.output)
    try:
        main_rank = distributed.from_env().main  # under torchrun only rank 0 reports (log, bar and lines)
        with EventLog(output, enabled=main_rank) as events, \
                tqdm(desc="train", unit="step", file=sys.stderr, dynamic_ncols=True, disable=not main_rank) as bar:
            events.start(data=str(Path(a.data).resolve()), resume=a.resume, arch=a.arch, params=overrides,
                         threads=torch.get_num_threads(), history=_history(output, a.resume))
            shown = -float("inf")
            try:
                for ev in train(a.data, output, arch=a.arch, resume=a.resume, stop=stop, condition=a.condition,
                                **overrides):
                    events.write(ev)
                    if main_rank:
                        shown = _show(bar, ev, shown)
            except BaseException as e:
                events.error(e)
                raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0


def _inputs(path: str) -> list[Path]:
    return find_audio(path)[1]


def cmd_reconstruct(a: argparse.Namespace) -> int:
    ck = load_checkpoint(a.checkpoint, pick_device(a.device))
    out = Path(a.output)
    failed = 0
    for f in tqdm(_inputs(a.input), desc="reconstruct", unit="file", file=sys.stderr):
        try:
            wave = load_audio(f, ck.spec.sample_rate, min_samples=ck.spec.n_fft)
        except AudioError as e:
            tqdm.write(f"skipped {e}", file=sys.stderr)
            failed += 1
            continue
        recon, _, _ = reconstruct_audio(ck, wave, a.phase, a.griffinlim_iters)
        save_wav(out / f"{f.stem}.wav", recon, ck.spec.sample_rate)
    print(f"wrote reconstructions to {out}" + (f"; {failed} files skipped" if failed else ""))
    return 0


SAMPLE_CHUNK = 64  # clips decoded at a time by the sample verb


def cmd_sample(a: argparse.Namespace) -> int:
    ck = load_checkpoint(a.checkpoint, pick_device(a.device))
    # (count, *latent_shape); the count, an unknown label, or a label for a model without labels refused there
    z = sample(ck, a.count, a.temperature, a.seed, a.label)
    out = Path(a.output)
    for i in tqdm(range(a.count), desc="sample", unit="clip", file=sys.stderr):
        if i % SAMPLE_CHUNK == 0:  # decoded a chunk at a time: the spectrograms of 10,000 clips need not fit
            specs = decode(ck, z[i:i + SAMPLE_CHUNK], a.label)
        save_wav(out / f"sample_{i:03d}.wav", to_wave(ck, specs[i % SAMPLE_CHUNK], phase=a.phase,
                                                      n_iter=a.griffinlim_iters), ck.spec.sample_rate)
    print(f"wrote {a.count} samples" + (f" of label {a.label}" if a.label is not None else "") + f" to {out}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    ck = load_checkpoint(a.checkpoint, pick_device(a.device))
    bar, update = _bar("evaluate")
    with bar:
        result = evaluate(ck, a.input, split=a.split, phase=a.phase, n_iter=a.griffinlim_iters,
                          with_stoi=a.stoi, progress=update)
    print(json.dumps(result))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    if a.format == "onnx":
        return _export_onnx(a)
    if a.check:
        raise ConfigError("--check compares ONNX files: use it with --format onnx")
    out = export_checkpoint(a.checkpoint, a.output, half=a.half)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"exported {a.checkpoint} to {out} ({size / 1e6:.1f} MB)")
    return 0


def _export_onnx(a: argparse.Namespace) -> int:
    """``export --format onnx``: the graphs and sound_vae.json (vae.onnx_export); ``--check`` then prints
    onnxruntime's max abs difference from PyTorch."""
    from .onnx_export import CONFIG, DECODER, ENCODER, compare_onnx, export_onnx, require_onnxruntime

    if a.half:
        raise ConfigError("--half applies to --format checkpoint; the ONNX graphs are float32")
    if a.check:
        require_onnxruntime()  # before the export, not after it
    out = export_onnx(a.checkpoint, a.output)
    size = sum((out / n).stat().st_size for n in (ENCODER, DECODER, CONFIG))
    print(f"exported {a.checkpoint} to {out} as {ENCODER}, {DECODER} and {CONFIG} ({size / 1e6:.1f} MB)")
    if a.check:
        err = compare_onnx(load_checkpoint(a.checkpoint), out)
        print("onnxruntime vs PyTorch, max abs difference: " + ", ".join(f"{k} {v:.2g}" for k, v in err.items()))
    return 0


def _batch_size(text: str) -> int | str:
    """``--batch-size``: a whole number, or ``auto`` (resolved for the device by vae.accel.auto_batch)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def _train_args(s: argparse.ArgumentParser) -> None:
    """The ``train`` verb's arguments: one per training parameter (:data:`vae.train.OVERRIDES`), and more."""
    s.add_argument("--data", required=True, help="store directory (from preprocess)")
    s.add_argument("--output", required=True, help="checkpoint directory to write")
    s.add_argument("--arch", choices=ARCHS,
                   help="default: the one measured best for the store's preset (vae.config.PRESET_ARCHS: temporal for "
                        "digits and music, study for the study's presets, default otherwise)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=_batch_size,
                   help="clips per step, or auto: the architecture's on CPU, a larger one with the learning rate "
                        "scaled to match on CUDA (vae.accel.auto_batch)")
    s.add_argument("--lr", type=float)
    s.add_argument("--latent-dim", type=int)
    s.add_argument("--kl-weight", type=float, help="beta, the KL term's weight")
    s.add_argument("--recon-weight", type=float, help="weight of the per-pixel MSE")
    s.add_argument("--seed", type=int)
    s.add_argument("--device", help="auto (default), cpu, cuda, mps")
    s.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): bf16 autocast with channels-last on CUDA, fp32 elsewhere")
    s.add_argument("--time-limit", dest="time_limit_s", type=float, help="stop after this many seconds of training")
    s.add_argument("--spectral-weight", type=float,
                   help="weight of the multi-resolution spectral loss (default: the architecture's; 0 turns it off)")
    s.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="augment training batches: frequency warp, time stretch, gain, noise (default: off)")
    s.add_argument("--kl-warmup-epochs", type=int, help="epochs over which the KL weight ramps up from 0")
    s.add_argument("--grad-clip", type=float, help="maximum gradient norm (0: no clipping)")
    s.add_argument("--checkpoint-every", type=int, help="epochs between saves of OUTPUT/last")
    s.add_argument("--preview-every", type=int, help="epochs between preview reconstructions in the event log")
    s.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    s.add_argument("--condition", choices=CONDITIONS,
                   help="label: condition the model on the store's labels (FSDD digit, genre or style folder), "
                        "so that sampling can ask for one (sample --label)")
    s.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vae", description="Sound VAE: preprocess audio, train, generate.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = sub.add_parser("preprocess", help="audio folder -> dataset store",
                       description="Turn a folder of audio into a dataset store of normalised spectrograms.")
    s.add_argument("--preset", default="digits", choices=sorted(PRESETS), help="parameter preset (default: digits)")
    s.add_argument("--input", required=True, help="folder of audio (searched recursively) or one file")
    s.add_argument("--output", required=True, help="store directory to write")
    s.add_argument("--sample-rate", type=int, help="Hz")
    s.add_argument("--duration", type=float, help="seconds per clip/window")
    s.add_argument("--n-fft", type=int, help="STFT frame length (samples)")
    s.add_argument("--hop", type=int, help="STFT hop (samples)")
    s.add_argument("--top-db", type=float, help="dynamic range kept, dB")
    s.add_argument("--normalisation", choices=["global", "clip"])
    s.add_argument("--windowing", choices=["all", "first"], help="all windows of long files, or the first only")
    s.add_argument("--test-fraction", type=float, default=0.1, help="share of non-FSDD files held out (default 0.1)")
    s.add_argument("--force", action="store_true", help="rebuild even if an up-to-date store exists")
    s.add_argument("--max-store-gb", type=float, default=MAX_STORE_BYTES / 2**30,
                   help="refuse to build a store larger than this, estimated before any work (default %(default)g)")
    s.add_argument("--workers", type=int, help=f"processes analysing files at once, 1 to {MAX_WORKERS} (same store "
                   f"either way); default: one per usable CPU ({usable_cpus()} here) for a store estimated at "
                   f"{PARALLEL_MIN_BYTES / 2**30:g} GiB or more, else 1")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("train", help="dataset store -> checkpoint",
                       description="Train a VAE; Ctrl-C (or SIGTERM) saves and stops, --resume continues. "
                                   "Progress is also logged to OUTPUT/events.jsonl (one JSON object a line).")
    _train_args(s)
    s.set_defaults(func=cmd_train)

    def model_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--checkpoint", required=True, help="checkpoint directory")
        s.add_argument("--phase", choices=["griffinlim", "zero"], help="phase method (default: the checkpoint's)")
        s.add_argument("--griffinlim-iters", type=int, help="Griffin-Lim iterations")
        s.add_argument("--device", default="cpu", help="cpu (default), cuda, mps, auto")

    s = sub.add_parser("reconstruct", help="audio -> encode -> decode -> audio",
                       description="Write each input file's reconstruction as OUTPUT/<name>.wav.")
    model_args(s)
    s.add_argument("--input", required=True, help="audio file or folder")
    s.add_argument("--output", required=True, help="folder for WAV files")
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("sample", help="sounds from the prior", description="Decode random latent codes to WAV files.")
    model_args(s)
    s.add_argument("--count", type=int, default=8, help=f"clips to write (1 to {MAX_SAMPLE_COUNT:,})")
    s.add_argument("--output", required=True, help="folder for WAV files")
    s.add_argument("--temperature", type=float, default=1.0, help="prior standard deviation scale")
    s.add_argument("--seed", type=int)
    s.add_argument("--label", help="a conditional model's label to sample (e.g. a digit: 7); default: none in "
                                   "particular")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("evaluate", help="reconstruction figures as JSON",
                       description="Reconstruct inputs and print one JSON line of metrics.")
    model_args(s)
    s.add_argument("--input", required=True, help="audio file, folder, or store directory")
    s.add_argument("--split", default="auto", choices=["auto", "train", "test", "all"],
                   help="auto: a store's test split, or every file of a folder")
    s.add_argument("--stoi", action=argparse.BooleanOptionalAction, default=None,
                   help="compute STOI (default: for models at <= 16 kHz)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="checkpoint -> shareable copy, or ONNX",
                       description="Copy a checkpoint without its training state (last/), optionally as float16; "
                                   "or (--format onnx) write its encoder and decoder as ONNX files with "
                                   "sound_vae.json, what a host needs to turn their spectrograms into sound.")
    s.add_argument("--checkpoint", required=True, help="checkpoint directory")
    s.add_argument("--output", required=True, help="folder to write")
    s.add_argument("--format", choices=["checkpoint", "onnx"], default="checkpoint",
                   help="checkpoint (default): a copy this tool loads; onnx: encoder.onnx, decoder.onnx and "
                        "sound_vae.json (needs the onnx extra: pip install 'sound-vae[onnx]')")
    s.add_argument("--half", action="store_true", help="store weights as float16 (half the size; loads as float32)")
    s.add_argument("--check", action="store_true",
                   help="--format onnx: run the files with onnxruntime and print the max abs difference from PyTorch")
    s.set_defaults(func=cmd_export)
    return p


def _check_output(path: str) -> None:
    """Raise :class:`InputError` now if ``path`` cannot become an output folder (a file is in the way, or
    the folder it would go in is not writable), rather than after the work."""
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise InputError(f"output {path} is a file, not a folder; choose another --output")
    parent = next(a for a in (p, *p.parents) if a.exists())
    if not parent.is_dir():
        raise InputError(f"output {path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output {path} cannot be written: no write permission in {parent}")


def main(argv: list[str] | None = None) -> int:
    """Run one verb. A :class:`UserError` prints ``error: <message>`` and returns 2; anything else is a
    bug and propagates with its traceback."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "count", None) is not None and not 1 <= args.count <= MAX_SAMPLE_COUNT:
            raise ConfigError(f"--count must be 1 to {MAX_SAMPLE_COUNT:,}, got {args.count}")
        if getattr(args, "output", None):
            _check_output(args.output)
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):  # anything else is a bug: its traceback helps
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: the disk is full{where}; free some space (or choose another --output) and run again",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

