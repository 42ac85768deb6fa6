"""Write a checkpoint's model card (README.md) from its config and a fresh evaluation.

    python scripts/make_model_card.py checkpoints/digits --eval-input ../shared/data/fsdd/recordings \
        --split test --data-note "..." --command "..."

The card's evaluation block is the exact JSON that ``python -m vae evaluate`` prints for the same
input and split; tests/test_shipped.py re-runs the evaluation and checks it still matches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vae.checkpoint import load_checkpoint
from vae.evaluate import evaluate
from vae.latents import load_latent_stats

EVAL_BEGIN, EVAL_END = "<!-- evaluation -->", "<!-- /evaluation -->"


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
    spectral = f" + {tc.spectral_weight:g} x multi-resolution spectral loss" if tc.spectral_weight else ""
    return (f"{net} Loss {tc.recon_weight:g} x per-pixel MSE{spectral} + {tc.kl_weight:g} x KL "
            f"(warm-up {tc.kl_warmup_epochs} epochs), Adam lr {tc.lr:g}, batch {tc.batch_size}.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--eval-input", required=True, help="held-out audio (folder) to evaluate on")
    p.add_argument("--split", default="test")
    p.add_argument("--title", required=True)
    p.add_argument("--data-note", required=True, help="what the model was trained on")
    p.add_argument("--command", required=True, help="the exact commands that reproduce the checkpoint")
    p.add_argument("--hardware", required=True, help="where it was trained")
    a = p.parse_args()

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
         f"the 2-D map.") if stats else "No latent statistics saved.", "",
    ]
    (Path(a.checkpoint) / "README.md").write_text("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
