"""What the app says: the introduction, result captions and tables, in one place."""

from __future__ import annotations

from pathlib import Path

from vae.evaluate import Comparison

INTRO = """# Sound VAE studio
Turn sound into pictures (spectrograms: time left to right, pitch bottom to top, brighter = louder),
teach a variational autoencoder to squeeze them into a few numbers, and listen to what those numbers mean.
**Dataset** builds training data, **Train** teaches a model, **Reconstruct** compares a clip with the
model's copy, **Explore** lets you move through the model's "space of sounds"."""

NO_STATS = ("This checkpoint has no latent statistics (latents.safetensors), so the sliders follow the "
            "prior's first axes instead of the directions real sounds vary along.")


def damaged_stats(problem: str) -> str:
    """The Explore note for a checkpoint whose latents.safetensors cannot be used."""
    return f"The latent statistics cannot be used ({problem}), so the sliders follow the prior's first axes."


def metrics_markdown(c: Comparison) -> str:
    """The reconstruction's figures next to those of the phase method alone, with how to read them."""
    iters = f" with {c.n_iter} Griffin-Lim iterations" if c.phase == "griffinlim" else " (zero phase)"
    return (
        "| | log-spectral distance (dB) | spectral convergence |\n|---|---|---|\n"
        f"| **VAE reconstruction**{iters} | {c.lsd_db:.2f} | {c.spectral_convergence:.3f} |\n"
        f"| original spectrogram, phase method only | {c.phase_only_lsd_db:.2f} | {c.phase_only_sc:.3f} |\n\n"
        "Lower is closer to the original for both (0 = identical). Log-spectral distance is the typical "
        "difference in loudness per frequency band, in dB; spectral convergence is the relative error of "
        "the magnitude spectrogram. The second row shows how much is lost by rebuilding the phase alone, "
        "without the model.")


def clip_caption(name: str, label: str | None, seconds: float, sample_rate: int, note: str = "",
                 model: str = "") -> str:
    """One line above a reconstruction: which clip, how long, and which model made it."""
    text = f"**{name}**" + (f" (label {label})" if label else "") + f", {seconds:.2f} s at {sample_rate} Hz"
    text += f", model **{Path(model).name}**" if model else ""
    return text + (f". Note: {note}" if note else "")


STALE = "⚠️ *Out of date: the clip, model or phase settings changed since this result. Press **Reconstruct**.*"


def explore_caption(ckpt: str, latent_shape: int | tuple[int, ...], n_sliders: int, covered: float,
                    note: str = "", learned_prior: bool = False) -> str:
    shape = (latent_shape,) if isinstance(latent_shape, int) else tuple(latent_shape)
    if len(shape) == 2:  # a temporal model: a sequence of codes per sound
        return (f"Latent space of **{Path(ckpt).name}**: each sound is a sequence of {shape[1]} codes of "
                f"{shape[0]} numbers, one per moment. The {n_sliders} sliders move along the directions in "
                f"which its training sounds' moments vary most ({100 * covered:.0f}% of the variation), "
                "adding one offset to every moment, so the sound keeps its timing. Interpolation blends "
                "two sounds moment by moment; the map places each sound at its average moment and draws "
                "the path of the one you pick. "
                + ("Random samples come from a small model, learned after the VAE, of how each code follows "
                   "the ones before it, so they are sounds rather than noise. " if learned_prior else
                   "This model has no learned prior: random samples are noise-like. ") + note)
    return (f"Latent space of **{Path(ckpt).name}**: {shape[0]} numbers per sound. "
            f"The {n_sliders} sliders move along the directions in which its training sounds vary most "
            f"({100 * covered:.0f}% of the variation), in standard deviations. " + note)


def picked_caption(name: str, label: str | None, has_store: bool) -> str:
    text = f"Picked **{name}**" + (f" (label {label})" if label is not None else "")
    if not has_store:
        text += (". These are the codes saved with the model, without their audio: pick a dataset store "
                 "under *Clips to map* to hear the clips themselves.")
    return text


def named_note(offered: int, left_out: list[str]) -> str:
    """The heading of the Explore tab's named directions (``left_out``: the properties this model's codes do not
    move reliably, e.g. "share of active frames")."""
    text = (f"**Named directions**: {offered} sliders along directions fitted to a property of the sound, each "
            "in its own unit: the change measured on the model's decoder, on average over training clips. They add "
            "to the sliders above.")
    if left_out:
        text += f" Not offered for this model (held-out fit or monotonicity too weak): {', '.join(left_out)}."
    return text
