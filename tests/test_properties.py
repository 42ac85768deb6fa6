"""Property measures on synthetic signals (vae.properties) and the fitting of named directions on codes with a
planted direction (vae.named_directions), with their place in latents.safetensors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from preprocessing.config import SpectrogramConfig
from preprocessing.spectrogram import log_spectrogram
from vae.latents import LatentStatsError, load_latent_stats, save_latent_stats, stats_from_codes
from vae.named_directions import (
    MIN_CODES,
    NamedDirections,
    fit_direction,
    fit_named_directions,
    held_out_r2,
    ranks,
    spearman,
)
from vae.properties import PROPERTIES, active_share, centroid, flatness, loudness, measure_all, pitch

CFG = SpectrogramConfig(sample_rate=8000, duration=0.76, n_fft=256, hop_length=64)  # the digits preset's STFT
SR = CFG.sample_rate
T = np.arange(CFG.n_samples) / SR


def harmonic(f0: float, amp: float = 0.5, n: int = 10) -> np.ndarray:
    """A tone with ``n`` harmonics of amplitude amp / h (those below Nyquist), (n_samples,)."""
    return sum(amp / h * np.sin(2 * np.pi * f0 * h * T) for h in range(1, n + 1) if f0 * h < SR / 2).astype(np.float32)


def db(wave: np.ndarray) -> torch.Tensor:
    return log_spectrogram(wave, CFG)  # (F, T) dB


def test_louder_is_louder_by_its_gain_in_db():
    quiet, loud = loudness(db(harmonic(200, 0.1))), loudness(db(harmonic(200, 0.2)))
    assert float(loud - quiet) == pytest.approx(20 * np.log10(2), abs=0.05)


@pytest.mark.parametrize("f0", [90.0, 123.0, 150.0, 200.0, 310.0, 440.0])
def test_pitch_of_a_harmonic_tone_on_a_coarse_spectrogram(f0):
    """31 Hz a bin: the harmonics read between bins still give f0 within 2% (4% below 100 Hz, where harmonics
    fewer than 3 bins apart overlap)."""
    assert float(pitch(db(harmonic(f0)), SR)) == pytest.approx(f0, rel=0.04 if f0 < 100 else 0.02)


def test_higher_tone_higher_pitch_and_centroid():
    lo, hi = db(harmonic(150)), db(harmonic(300))
    assert float(pitch(hi, SR)) > 1.8 * float(pitch(lo, SR))
    assert float(centroid(hi, SR)) > float(centroid(lo, SR))


def test_centroid_of_a_pure_tone_is_near_its_frequency():
    sine = (0.5 * np.sin(2 * np.pi * 1000 * T)).astype(np.float32)
    assert float(centroid(db(sine), SR)) == pytest.approx(1000, rel=0.1)


def test_noise_is_flatter_than_a_tone():
    noise = (0.3 * np.random.default_rng(0).uniform(-1, 1, CFG.n_samples)).astype(np.float32)
    assert float(flatness(db(noise))) > -6 > -20 > float(flatness(db(harmonic(200))))


def test_a_shorter_burst_is_a_smaller_share_of_the_window():
    shares = []
    for keep in (0.25, 0.5, 1.0):
        w = harmonic(200)
        w[int(keep * len(w)):] = 0
        shares.append(float(active_share(db(w))))
    assert shares[0] < shares[1] < shares[2] == 1.0
    assert shares[0] == pytest.approx(0.25, abs=0.06) and shares[1] == pytest.approx(0.5, abs=0.06)


def test_measure_all_batches_and_names_every_property():
    specs = torch.stack([db(harmonic(f)) for f in (100, 200, 300)])
    out = measure_all(specs, SR, batch=2)
    assert list(out) == list(PROPERTIES) and all(v.shape == (3,) for v in out.values())
    assert out["pitch"] == pytest.approx(torch.tensor([100.0, 200.0, 300.0]), rel=0.02)
    assert out["loudness"][0] == pytest.approx(float(loudness(specs[0])))


def test_ranks_and_spearman():
    assert ranks(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == [3.0, 0.0, 1.5, 1.5]
    x = np.arange(9.0)
    assert spearman(x, x**3) == pytest.approx(1.0) and spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, np.ones(9)) == 0.0  # a property that does not move is not monotonic


# ---------------------------------------------------------------------------- fitting


def planted(n: int = 400, d: int = 8, noise: float = 0.1, seed: int = 0):
    """Codes (n, d) whose sample covariance is exactly I (so ridge does not bend the direction), a unit
    direction (d,) and y = 2 x . direction + noise."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a - a.mean(0))  # centred, orthonormal columns
    x = (q * (n - 1) ** 0.5).float()
    true = torch.randn(d, generator=g)
    true /= true.norm()
    return x, true, 2.0 * x @ true + noise * torch.randn(n, generator=g)


def test_fit_recovers_a_planted_direction():
    x, true, y = planted()
    d, sd, r2 = fit_direction(x, y)
    assert float(d @ true) > 0.99  # the direction, pointing the way y grows
    assert sd == pytest.approx(1.0, abs=0.1)  # unit-variance codes
    assert r2 > 0.9


def test_held_out_r2_of_noise_is_near_zero():
    x, _, _ = planted()
    y = torch.randn(len(x), generator=torch.Generator().manual_seed(5))
    assert held_out_r2(x, y) < 0.05


def linear_decoder(true: torch.Tensor, sequence: bool):
    """A 'decoder' whose output level is 3 dB per unit of code along ``true`` (its mean frame for sequences), on
    a fixed harmonic spectrum: only loudness depends on the code."""
    base = db(harmonic(200))  # (F, T)

    def decode_db(z: torch.Tensor) -> torch.Tensor:
        frame = z.mean(-1) if sequence else z  # (B, D)
        return base + 3.0 * (frame @ true)[:, None, None]

    return decode_db


@pytest.mark.parametrize("sequence", [False, True])
def test_named_directions_find_the_decoders_loudness_direction(sequence):
    x, true, _ = planted(n=60)
    codes = x[:, :, None].expand(60, 8, 4).clone() if sequence else x  # sequences: the same frame 4 times
    nd = fit_named_directions(linear_decoder(true, sequence), codes, SR)
    assert nd.names == list(PROPERTIES)
    i = nd.names.index("loudness")
    assert float(nd.directions[i] @ true) > 0.99
    # the ridge direction of each fold's part bends a little away from the true one; least squares does not
    assert float(nd.r2[i]) > 0.9 and float(nd.r2_linear[i]) > 0.999
    assert float(nd.spearman[i]) == pytest.approx(1.0)
    assert float(nd.slope[i]) == pytest.approx(3.0 * float(nd.sd[i]), rel=0.02)  # 3 dB per unit along it
    assert nd.passes(i)
    # the spectrum's shape does not depend on the code: those properties do not move and are not offered
    assert {nd.names[k] for k in nd.offered()} == {"loudness"}
    assert nd.values.shape == (60, len(PROPERTIES))
    off = nd.offset([1.5])
    torch.testing.assert_close(off, 1.5 * nd.sd[i] * nd.directions[i])


def test_too_few_codes_give_no_named_directions():
    x, true, _ = planted(n=MIN_CODES - 1)
    assert fit_named_directions(linear_decoder(true, False), x, SR) is None


# ---------------------------------------------------------------------------- latents.safetensors


def stats_with_named(sequence: bool = True):
    x, true, _ = planted(n=30)
    codes = x[:, :, None].expand(30, 8, 4).clone() if sequence else x
    stats = stats_from_codes(codes, [str(i % 3) for i in range(30)], [f"c{i}" for i in range(30)])
    stats.named = fit_named_directions(linear_decoder(true, sequence), codes, SR)
    return stats


def test_named_directions_survive_save_and_load(tmp_path):
    stats = stats_with_named()
    save_latent_stats(tmp_path, stats)
    back = load_latent_stats(tmp_path, (8, 4))
    assert isinstance(back.named, NamedDirections) and back.named.names == stats.named.names
    for k in ("directions", "sd", "slope", "r2", "r2_linear", "spearman", "spread", "values"):
        torch.testing.assert_close(getattr(back.named, k), getattr(stats.named, k).float())
    assert back.named.offered() == stats.named.offered()


def test_a_file_without_named_directions_still_loads(tmp_path):
    stats = stats_with_named()
    stats.named = None
    save_latent_stats(tmp_path, stats)
    assert load_latent_stats(tmp_path).named is None


def _rewrite(path, drop: str = "", replace: dict | None = None, metadata: dict | None = None):
    from safetensors import safe_open

    t = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    t.pop(drop, None)
    t.update(replace or {})
    save_file(t, str(path), metadata={**md, **(metadata or {})})


@pytest.mark.parametrize("damage", ["missing tensor", "wrong shape", "unknown name", "not a name", "not finite"])
def test_damaged_named_directions_raise(tmp_path, damage):
    save_latent_stats(tmp_path, stats_with_named())
    path = tmp_path / "latents.safetensors"
    if damage == "missing tensor":
        _rewrite(path, drop="named_slope")
    elif damage == "wrong shape":
        _rewrite(path, replace={"named_directions": torch.zeros(5, 7)})
    elif damage == "unknown name":
        _rewrite(path, metadata={"named": json.dumps(["loudness", "centroid", "pitch", "flatness", "volume"])})
    elif damage == "not a name":
        _rewrite(path, metadata={"named": json.dumps([["loudness"], "centroid", "pitch", "flatness", "length"])})
    else:
        _rewrite(path, replace={"named_r2": torch.tensor([0.5, float("nan"), 0.1, 0.2, 0.3])})
    with pytest.raises(LatentStatsError, match=r"latents\.safetensors"):
        load_latent_stats(tmp_path)


def test_a_training_run_saves_named_directions_and_update_checkpoint_refits_them(trained, tiny_store, tmp_path):
    """The run's end fits them (compute_latent_stats); update_checkpoint gives an older checkpoint the same ones
    from its saved codes alone, or recomputes everything from a store."""
    import shutil

    from vae.named_directions import update_checkpoint

    saved = load_latent_stats(trained[0])
    assert saved.named is not None and saved.named.names == list(PROPERTIES)
    assert saved.named.values.shape == (len(saved.codes), len(PROPERTIES))
    old = tmp_path / "old"
    shutil.copytree(trained[0], old, ignore=shutil.ignore_patterns("last"))
    saved.named = None
    save_latent_stats(old, saved)  # as written before issue #14
    assert load_latent_stats(old).named is None
    for store in (None, tiny_store):
        nd = update_checkpoint(old, store)
        back = load_latent_stats(old).named
        assert back.names == nd.names == list(PROPERTIES)
        for k in ("directions", "r2", "spearman", "slope"):
            torch.testing.assert_close(getattr(back, k), getattr(load_latent_stats(trained[0]).named, k),
                                       atol=1e-4, rtol=1e-4)
