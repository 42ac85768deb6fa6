"""Write a checkpoint's model card (README.md) from its config and a fresh evaluation.

    python scripts/make_model_card.py checkpoints/digits --eval-input ../shared/data/fsdd/recordings \
        --split test --data-note "..." --command "..."

The card's evaluation block is the exact JSON that ``python -m vae evaluate`` prints for the same
input and split; tests/test_shipped.py re-runs the evaluation and checks it still matches.

    python scripts/make_model_card.py checkpoints/digits --named-only

rewrites only the card's "Named directions" section, from the checkpoint's latents.safetensors (after
``python scripts/fit_named_directions.py``), leaving the rest of the card as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vae.checkpoint import load_checkpoint
from vae.evaluate import evaluate
from vae.latents import LatentStats, load_latent_stats
from vae.named_directions import (
    FOLDS,
    MIN_CHANGE_SD,
    MIN_R2,
    MIN_SPEARMAN,
    RANGE_SD,
    SWEEP_POINTS,
    SWEEP_STARTS,
    figures_table,
)
from vae.properties import PROPERTIES

EVAL_BEGIN, EVAL_END = "<!-- evaluation -->", "<!-- /evaluation -->"
NAMED_BEGIN, NAMED_END = "<!-- named -->", "<!-- /named -->"


def card_evaluation(card: str) -> dict:
    """The evaluation JSON embedded in a model card."""
    block = card.split(EVAL_BEGIN, 1)[1].split(EVAL_END, 1)[0]
    return json.loads(block.strip().removeprefix("```json").removesuffix("```").strip())


def architecture_text(ck, arch: str | None, n_params: int) -> str:
    """One paragraph: the network, its latent, its loss and optimiser."""
    m, tc = ck.model_cfg, ck.train_cfg
    if m.kind == "temporal":
        d, frames = m.latent_shape
        net = (f"`{arch}`: the {m.n_freq} frequency bins folded into channels, 1-D convolutions along time "
               f"(widths {list(m.channels)}, time strides {[st for _, st in m.strides]}, {m.res_blocks} residual "
               f"block(s) per stage, {m.norm} norm, kernel {m.kernel}); the latent is a sequence of {frames} codes "
               f"of {d} numbers per clip (one per {m.time_ratio} spectrogram frames); {n_params / 1e6:.2f} M "
               "parameters. A learned autoregressive prior over the codes (`prior.safetensors`) gives the samples.")
    else:
        net = (f"`{arch}`: encoder channels {list(m.channels)}, strides {[list(x) for x in m.strides]}, "
               f"latent {m.latent_dim}, decoder channels {list(m.decoder_channels)}; "
               f"{n_params / 1e6:.2f} M parameters.")
    if m.labels:
        where = "the decoder's input and the encoder's features" if m.label_encoder else "the decoder's input"
        net += (f" Conditioned on the label ({', '.join(m.labels)}; `--condition label`): a learned "
                f"{m.label_dim}-number embedding of it is appended to {where}.")
    spectral = f" + {tc.spectral_weight:g} x multi-resolution spectral loss" if tc.spectral_weight else ""
    return (f"{net} Loss {tc.recon_weight:g} x per-pixel MSE{spectral} + {tc.kl_weight:g} x KL "
            f"(warm-up {tc.kl_warmup_epochs} epochs), Adam lr {tc.lr:g}, batch {tc.batch_size}.")


def named_section(checkpoint: str, stats: LatentStats | None) -> list[str]:
    """The card's "Named directions" section (lines): how the directions were fitted and their figures."""
    head = ["## Named directions", "", NAMED_BEGIN]
    nd = stats.named if stats else None
    if nd is None:
        return [*head, "No named directions saved (`python scripts/fit_named_directions.py "
                f"{checkpoint}` fits them).", NAMED_END, ""]
    left_out = [PROPERTIES[n].title for i, n in enumerate(nd.names) if not nd.passes(i)]
    return [*head,
            "Directions that move a measurable property of the sound, the Explore tab's *Named directions* "
            f"sliders, fitted by `python scripts/fit_named_directions.py {checkpoint}` on the {len(stats.codes)} "
            "training codes saved in `latents.safetensors` (vae.named_directions): each property is measured on "
            "the decoded code (vae.properties: RMS level, spectral centroid, harmonic-sum f0, spectral flatness, "
            "share of frames within 30 dB of the loudest) and regressed on the code's mean frame (ridge). R² is on "
            f"held-out clips ({FOLDS}-fold; folds split clips, not recordings): of the slider's direction, and of a "
            "near-least-squares fit of all the numbers (how much of the property the codes hold linearly). "
            f"Spearman: slider position against the decoded property, {SWEEP_POINTS} positions over +/- "
            f"{RANGE_SD:g} SD, median over {SWEEP_STARTS} clips; the change is the decoded one over that range "
            f"(median over the clips). A slider is offered when R² >= {MIN_R2:g}, Spearman >= {MIN_SPEARMAN:g} "
            f"and the change is at least {MIN_CHANGE_SD:g} of the property's spread across clips"
            + (f"; left out here: {', '.join(left_out)}" if left_out else "; all are offered here")
            + ". `python -m pytest tests/test_named_shipped.py -s` decodes along each offered slider again from 6 "
            "other clips and checks the median Spearman >= 0.8, and from the origin, the Explore tab's start (there "
            "the length is not checked, as the origin decodes to a steady sound that fills the window, and f0, which "
            "moves in steps on a sound with no single clear pitch, only for its direction).", "",
            figures_table(nd), NAMED_END, ""]


def replace_named_section(card: str, section: list[str]) -> str:
    """``card`` with its "Named directions" section replaced by ``section`` (added at the end if it has none)."""
    text = "\n".join(section)
    if NAMED_BEGIN in card:
        start = card.index("## Named directions")
        end = card.index(NAMED_END) + len(NAMED_END)
        return card[:start] + text.removesuffix("\n") + card[end:]
    return card.rstrip("\n") + "\n\n" + text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--named-only", action="store_true", help="rewrite only the Named directions section")
    p.add_argument("--eval-input", help="held-out audio (folder) to evaluate on (required unless --named-only)")
    p.add_argument("--split", default="test")
    p.add_argument("--title")
    p.add_argument("--data-note", help="what the model was trained on")
    p.add_argument("--command", help="the exact commands that reproduce the checkpoint")
    p.add_argument("--hardware", help="where it was trained")
    a = p.parse_args()
    card_path = Path(a.checkpoint) / "README.md"
    if a.named_only:
        card_path.write_text(replace_named_section(card_path.read_text(), named_section(a.checkpoint,
                                                                                         load_latent_stats(a.checkpoint))))
        return
    missing = [f"--{k.replace('_', '-')}" for k in ("eval_input", "title", "data_note", "command", "hardware")
               if getattr(a, k) is None]
    if missing:
        p.error(f"the arguments {', '.join(missing)} are required (or --named-only)")

    ck = load_checkpoint(a.checkpoint)
    result = evaluate(ck, a.eval_input, split=a.split)
    result["checkpoint"] = a.checkpoint
    result["input"] = a.eval_input
    stats = load_latent_stats(a.checkpoint)
    s, meta = ck.spec, ck.meta
    hist = meta.get("history", [])
    n_params = sum(p.numel() for p in ck.model.parameters())
    k = stats.n_sliders() if stats else 0
    lines = [
        f"# {a.title}", "",
        "## Data", "", a.data_note, "",
        f"Training clips: {meta.get('n_train')}, validation clips: {meta.get('n_val')}.", "",
        "## Preset", "",
        f"{s.sample_rate} Hz mono, {s.duration} s clips ({s.windowing} windows), STFT frame {s.n_fft} / hop "
        f"{s.hop_length} -> {s.n_freq} x {s.n_frames} log-magnitude spectrograms; {s.normalisation} normalisation "
        f"(range {s.ref_db - s.top_db:.1f} .. {s.ref_db:.1f} dB)." if s.ref_db is not None else
        f"{s.sample_rate} Hz, {s.normalisation} normalisation", "",
        f"Sound: {s.phase} phase ({s.griffinlim_iters} Griffin-Lim iterations).", "",
        "## Architecture", "",
        architecture_text(ck, meta.get("arch"), n_params), "",
        "## Reproduce", "", "```bash", a.command, "```", "",
        "## Training", "",
        f"{ck.train_cfg.epochs} epochs; this is the best by validation loss, after epoch {meta.get('epoch')} and "
        f"{meta.get('train_time_s')} s of training time on {a.hardware} "
        f"(device `{meta.get('device')}`, torch {meta.get('torch')}). "
        + ("Weights are stored as float16 (`python -m vae export --half`) and load as float32. "
           if meta.get("weights_dtype") == "float16" else "")
        + f"Best validation loss {meta.get('best_val', 0):.4g}"
        + (f"; at that epoch: train recon MSE {hist[-1]['train']['recon']:.5f}, val recon MSE "
           f"{hist[-1]['val']['recon']:.5f}." if hist else "."), "",
        "## Evaluation", "",
        f"`python -m vae evaluate --checkpoint {a.checkpoint} --input {a.eval_input} --split {a.split}` "
        "(held-out recordings, resynthesised with the preset's phase method; audio figures use one fixed "
        "16 kHz STFT; lower is better except STOI):", "",
        EVAL_BEGIN, "```json", json.dumps(result, indent=2), "```", EVAL_END, "",
        "## Latent space", "",
        (f"`latents.safetensors` holds the statistics the Explore tab uses without any dataset: the mean "
         f"{'latent frame' if ck.model_cfg.kind == 'temporal' else 'code'}, "
         f"{len(stats.explained)} principal directions, the leading ones being the tab's sliders (the first {k} "
         f"cover {float(stats.explained[:k].sum()) * 100:.0f}% of the variance), per-label means "
         f"for {len(stats.label_names)} labels ({', '.join(stats.label_names)}), and {len(stats.codes)} codes for "
         f"the 2-D map."
         + (" It also holds each label's codes as a Gaussian (mean and covariance factor, `label_chol`): asked for "
            "a label (`sample --label`, the Explore tab's label picker), sampling draws the code from it and "
            "decodes it with the label." if stats.label_chol is not None else "")) if stats
        else "No latent statistics saved.", "",
        *named_section(a.checkpoint, stats),
    ]
    card_path.write_text("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
