"""Named dataset stores in a workspace folder, for the app: list, build, summarise, listen.

Stores live in ``<data dir>/stores/<name>``; uploaded audio is kept in ``<data dir>/uploads/<name>``
so a store's clips can still be played from their source files later.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from preprocessing.config import NORMALISATIONS, PRESETS, WINDOWINGS, ConfigError, SpectrogramConfig, preset
from preprocessing.progress import ProgressFn
from preprocessing.store import PreprocessError, Store, StoreSummary, build_store

from .uploads import DEFAULT_LIMITS, UploadLimits, stage_uploads

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
APP_PRESETS = ("digits", "music")  # the presets offered in the app (the study's are CLI-only)


def check_name(name: str, what: str = "store") -> str:
    """A safe folder name (letters, digits, ``_.-``; no path separators), or :class:`ConfigError`."""
    name = (name or "").strip()
    if not NAME_RE.match(name) or name in (".", ".."):
        raise ConfigError(f"{what} name {name!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit")
    return name


def list_stores(root: str | Path) -> list[Path]:
    """Store directories directly under ``root`` (those with config.json and manifest.json), by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "config.json").is_file() and (p / "manifest.json").is_file())


def store_problem(path: str | Path) -> str:
    """What is wrong with the store at ``path`` judging by its config.json (cheap: the manifest and the
    spectrograms are not read), or "" when it looks usable."""
    config = Path(path) / "config.json"
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
        SpectrogramConfig.from_dict(meta["spectrogram"])
    except OSError as e:
        return f"cannot read {config.name} ({e.strerror or e})"
    except ValueError as e:  # not JSON, not UTF-8, or bad parameters (ConfigError)
        return f"{config.name} is damaged ({str(e).splitlines()[0][:80]})"
    except (KeyError, TypeError):
        return f"{config.name} has no spectrogram parameters"
    return ""


def preset_fields(name: str) -> dict[str, object]:
    """The editable parameters of a preset, as the Dataset form shows them."""
    cfg = preset(name)
    return {"sample_rate": cfg.sample_rate, "duration": cfg.duration, "n_fft": cfg.n_fft,
            "hop_length": cfg.hop_length, "normalisation": cfg.normalisation, "windowing": cfg.windowing}


def spectrogram_config(preset_name: str, sample_rate: float | None = None, duration: float | None = None,
                       n_fft: float | None = None, hop_length: float | None = None,
                       normalisation: str | None = None, windowing: str | None = None) -> SpectrogramConfig:
    """The preset with the form's values applied and checked (raises :class:`ConfigError`)."""
    if preset_name not in PRESETS:
        raise ConfigError(f"unknown preset {preset_name!r}; choose one of {list(APP_PRESETS)}")
    if normalisation is not None and normalisation not in NORMALISATIONS:
        raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if windowing is not None and windowing not in WINDOWINGS:
        raise ConfigError(f"windowing must be one of {WINDOWINGS}, got {windowing!r}")

    def as_int(v: float | None, what: str) -> int | None:
        if v is None:
            return None
        if float(v) != int(v):
            raise ConfigError(f"{what} must be a whole number, got {v}")
        return int(v)

    return preset(preset_name).replace(
        sample_rate=as_int(sample_rate, "sample rate"), duration=float(duration) if duration is not None else None,
        n_fft=as_int(n_fft, "frame (n_fft)"), hop_length=as_int(hop_length, "hop"),
        normalisation=normalisation, windowing=windowing,
    )


def server_folder(folder: str | Path, allowed_roots: Sequence[str | Path] | None = None) -> Path:
    """The server folder a user typed, checked before anything in it is read: not blank, inside one of
    ``allowed_roots`` once links and ``..`` are resolved (the resolved path is returned; any folder
    when ``allowed_roots`` is None), and an existing folder. Raises :class:`PreprocessError`."""
    text = str(folder).strip()
    if not text:
        raise PreprocessError("the folder field is empty: type the path of a folder of audio on the server, "
                              "or upload the files instead")
    source = Path(text).expanduser()
    if allowed_roots is not None:
        try:
            real = source.resolve()
            roots = [Path(r).expanduser().resolve() for r in allowed_roots]
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
            raise PreprocessError(f"folder {text} cannot be resolved ({e})") from None
        if not any(real == r or r in real.parents for r in roots):
            shown = text if str(real) == text else f"{text} (that is, {real})"
            raise PreprocessError(
                f"folder {shown} is outside the folders this app may read ({', '.join(map(str, roots)) or 'none'}): "
                "put the audio in one of them or upload it; whoever runs the app can allow more with "
                f"`python app.py --allow-dir {shlex.quote(str(real))}`")
        source = real
    if not source.exists():
        raise PreprocessError(f"folder {source} does not exist on the server")
    if not source.is_dir():
        raise PreprocessError(f"{source} is not a folder")
    return source


def build_named_store(
    stores_dir: str | Path, name: str, cfg: SpectrogramConfig, *, folder: str | Path | None = None,
    uploads: Sequence[str | Path] | None = None, uploads_dir: str | Path | None = None,
    progress: ProgressFn | None = None, limits: UploadLimits = DEFAULT_LIMITS,
    allowed_roots: Sequence[str | Path] | None = None,
) -> tuple[StoreSummary, list[tuple[str, str]]]:
    """Build the store ``stores_dir/name`` from a server folder or from uploaded files/zips.

    Exactly one of ``folder`` and ``uploads`` is used; a folder must lie inside ``allowed_roots``
    (when given; see :func:`server_folder`). Uploads are staged (bounded, zip-safe) into
    ``uploads_dir/name``; if the build fails they are removed and an earlier build's files put back.
    Returns ``(summary, refused uploads)``; raises :class:`ConfigError`,
    :class:`~studio.uploads.UploadError` or :class:`PreprocessError` with a readable message.
    """
    name = check_name(name)
    out = Path(stores_dir) / name
    if uploads:
        if uploads_dir is None:
            raise ConfigError("uploads_dir is needed to keep uploaded audio")
        return _build_from_uploads(list(uploads), Path(uploads_dir) / name, out, cfg, progress, limits)
    if folder is None:
        raise PreprocessError("choose a source: a folder on the server, or upload audio files or a zip")
    source = server_folder(folder, allowed_roots)
    return build_store(source, out, cfg, progress=progress), []


_building: set[Path] = set()  # upload folders being staged or built now
_building_lock = threading.Lock()


def _build_from_uploads(uploads: list[str | Path], staged: Path, out: Path, cfg: SpectrogramConfig,
                        progress: ProgressFn | None,
                        limits: UploadLimits) -> tuple[StoreSummary, list[tuple[str, str]]]:
    """Stage ``uploads`` into ``staged`` and build ``out`` from them. The files of an earlier build wait
    beside it (``.previous-<name>``) until the new store is built: removed then, put back if anything fails."""
    key = staged.resolve()
    with _building_lock:
        if key in _building:
            raise PreprocessError(f"store {out.name} is being built from an upload already; wait for it to finish")
        _building.add(key)
    previous = staged.with_name(f".previous-{staged.name}")
    try:
        shutil.rmtree(previous, ignore_errors=True)  # left by a build that was killed
        if staged.exists():
            staged.rename(previous)
        try:
            source, refused = stage_uploads(uploads, staged, limits)
            summary = build_store(source, out, cfg, progress=progress)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            if previous.exists():
                previous.rename(staged)
            raise
        shutil.rmtree(previous, ignore_errors=True)
        return summary, refused
    finally:
        with _building_lock:
            _building.discard(key)


def summary_tables(summary: StoreSummary,
                   refused: Sequence[tuple[str, str]] = ()) -> tuple[str, list[list[object]], list[list[str]]]:
    """(headline markdown, rows [label, train, test, total], rows [file, reason]) for the summary view."""
    rows: list[list[object]] = []
    for label, counts in sorted(summary.per_label.items()):
        tr, te = counts.get("train", 0), counts.get("test", 0)
        rows.append([label, tr, te, tr + te])
    n_train = sum(r[1] for r in rows)
    n_test = sum(r[2] for r in rows)
    rows.append(["all", n_train, n_test, n_train + n_test])
    skipped = [[Path(s.path).name, s.reason] for s in summary.skipped] + [[n, r] for n, r in refused]
    minutes = summary.duration_s / 60
    head = (f"**{summary.n_clips} clips** from {summary.n_files} files, {minutes:.1f} min in total "
            f"({summary.duration_s:.0f} s); spectrograms {summary.shape[0]} frequency bins x "
            f"{summary.shape[1]} frames." + (" Reused an identical existing store." if summary.reused else ""))
    if summary.silent_windows:
        head += f" {summary.silent_windows} silent windows left out."
    head += f" {len(skipped)} files skipped." if skipped else " No files skipped."
    return head, rows, skipped


def example_indices(store: Store, n: int = 4, seed: int = 0) -> list[int]:
    """Up to ``n`` distinct clip indices, deterministic for a ``seed``: one per label first, each from a
    source file not used yet where possible (a music store's examples then come from different tracks,
    even when the test split holds one track), and from the test split among equal candidates."""
    rng = np.random.default_rng(seed)
    test = set(store.indices("test"))
    by_label: dict[str | None, list[int]] = {}
    for i, c in enumerate(store.clips):
        by_label.setdefault(c["label"], []).append(i)
    picked: list[int] = []
    used: set[str] = set()

    def take(candidates: list[int]) -> None:
        chosen = set(picked)
        left = [i for i in candidates if i not in chosen]
        fresh = [i for i in left if store.clips[i]["source"] not in used]
        for group in ([i for i in fresh if i in test], fresh, [i for i in left if i in test], left):
            if group:
                i = int(group[int(rng.integers(len(group)))])
                picked.append(i)
                used.add(store.clips[i]["source"])
                return

    for label in sorted(by_label, key=lambda x: (x is None, str(x))):
        if len(picked) >= n:
            break
        take(by_label[label])
    everything = list(range(len(store)))
    while len(picked) < min(n, len(store)):
        take(everything)
    return picked


def clip_choices(store: Store, limit: int = 2000) -> list[tuple[str, int]]:
    """(display name, index) for a clip picker: test clips first, then training clips; at most ``limit``."""
    order = store.indices("test") + store.indices("train")
    out = []
    for i in order[:limit]:
        c = store.clips[i]
        label = f" [{c['label']}]" if c["label"] is not None else ""
        out.append((f"{store.clip_name(i)}{label} ({c['split']})", i))
    return out
