"""The Explore tab's named directions (issue #14) on the shipped digits model: sliders named by the property they
change, in its unit, composing with the principal sliders; and the map coloured by a property."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from app_helpers import make_workspace, spy_render
from conftest import ROOT

from preprocessing.spectrogram import denormalise
from studio.latent_space import colour_choices, named_sds, named_slider_specs, slider_specs
from studio.tabs.explore import MAX_NAMED
from vae.generate import decode, display_range
from vae.latents import MAX_SLIDERS, from_sliders, to_sliders
from vae.properties import measure_all


@pytest.fixture(scope="module")
def shipped_studio(tmp_path_factory):
    from app import create_app

    ws = make_workspace(tmp_path_factory.mktemp("named"), None, ROOT / "checkpoints" / "digits")
    return create_app(ws, checkpoint=str(ws.checkpoints_dir / "digits"))[1]


def test_setup_shows_the_named_sliders_in_their_units(shipped_studio):
    ex = shipped_studio.explore
    out = ex.setup(shipped_studio.initial_checkpoint, "zero", 1)
    assert out[ex.named_note]["visible"] and "Named directions" in out[ex.named_note]["value"]
    shown = [out[s] for s in ex.named if out[s]["visible"]]
    labels = [s["label"] for s in shown]
    assert labels == ["quieter ↔ louder (RMS level, dB)", "darker ↔ brighter (spectral centroid, Hz)",
                      "lower ↔ higher (fundamental frequency, Hz)", "tonal ↔ noisy (spectral flatness, dB)",
                      "shorter ↔ longer (share of active frames, % of the window)"]
    assert len(ex.named) == MAX_NAMED
    for s in shown:  # symmetric, in the property's unit, and starting at 0 (no change)
        assert s["minimum"] == -s["maximum"] < 0 and s["value"] == 0 and 0 < s["step"] < s["maximum"]
    centroid = shown[1]
    assert 100 <= centroid["maximum"] <= 1000  # hundreds of Hz of centroid, not SDs


def centroid_of(ck, z: torch.Tensor) -> float:
    lo, hi = display_range(ck)
    return float(measure_all(denormalise(decode(ck, z), lo, hi), ck.spec.sample_rate, ["centroid"])["centroid"][0])


def test_a_named_slider_moves_the_code_along_its_direction_and_the_property_its_way(shipped_studio, monkeypatch):
    """Start from a training clip (principal sliders and residual where it is), then move "brighter": the code
    gains exactly SD x sd x direction on every frame, on top of the principal sliders, and the decoded
    centroid rises with the slider."""
    ex = shipped_studio.explore
    ck_path = shipped_studio.initial_checkpoint
    ck, stats = shipped_studio.ws.load(ck_path), shipped_studio.ws.latent_stats(ck_path)
    n = len(slider_specs(stats))
    specs = named_slider_specs(stats)
    j = [s.name for s in specs].index("centroid")
    codes, _ = spy_render(monkeypatch)
    clip = stats.codes[3]
    values, residual = to_sliders(stats, clip, n, step=0.05)
    principal = [*values, *[0.0] * (MAX_SLIDERS - n)]
    centroids = []
    for v in (specs[j].minimum, 0.0, specs[j].maximum):
        named = [0.0] * MAX_NAMED
        named[j] = v
        ex.move(ck_path, residual.tolist(), *principal, "zero", 1, *named)
        z = codes[-1].reshape(clip.shape)
        sd = v / specs[j].per_sd
        offered = stats.named.offered()[j]
        expected = from_sliders(stats, values, residual) + (sd * stats.named.sd[offered]
                                                             * stats.named.directions[offered])[:, None]
        torch.testing.assert_close(z, expected, atol=1e-5, rtol=0)
        centroids.append(centroid_of(ck, z))
    assert centroids[0] < centroids[1] < centroids[2], centroids
    # about the slider's unit: the change is within a factor 2 of what the slider says
    assert 0.5 <= (centroids[2] - centroids[0]) / (specs[j].maximum - specs[j].minimum) <= 2.0, centroids


def test_named_sliders_compose_with_the_principal_ones(shipped_studio, monkeypatch):
    ex = shipped_studio.explore
    ck_path = shipped_studio.initial_checkpoint
    stats = shipped_studio.ws.latent_stats(ck_path)
    n, m = len(slider_specs(stats)), len(named_slider_specs(stats))
    codes, _ = spy_render(monkeypatch)
    residual = torch.zeros(stats.latent_shape)
    principal = [0.5, -1.0, *[0.0] * (MAX_SLIDERS - 2)]
    named = [specs.maximum / 2 for specs in named_slider_specs(stats)] + [0.0] * (MAX_NAMED - m)
    ex.move(ck_path, residual.tolist(), *principal, "zero", 1, *named)
    both = codes[-1].reshape(stats.latent_shape)
    ex.move(ck_path, residual.tolist(), *principal, "zero", 1)  # the named values left out: all 0
    alone = codes[-1].reshape(stats.latent_shape)
    torch.testing.assert_close(alone, from_sliders(stats, principal[:n], residual), atol=1e-6, rtol=0)
    offset = stats.named.offset(named_sds(stats, named[:m]))
    torch.testing.assert_close(both - alone, offset[:, None].expand_as(both), atol=1e-5, rtol=0)


def test_the_map_can_be_coloured_by_a_property(shipped_studio):
    ex = shipped_studio.explore
    ck_path = shipped_studio.initial_checkpoint
    stats = shipped_studio.ws.latent_stats(ck_path)
    assert [k for _, k in colour_choices()] == ["label", "loudness", "centroid", "pitch", "flatness", "length"]
    by_label = ex.draw_map(ck_path, "", "label")[ex.map_state]
    assert by_label["colours"] is None
    state = ex.draw_map(ck_path, "", "pitch")[ex.map_state]
    values, title = state["colours"]
    assert values.shape == (len(stats.codes),) and "fundamental frequency (Hz)" in title
    # the saved measures of the checkpoint's own codes: those of their decoded spectrograms
    ck = shipped_studio.ws.load(ck_path)
    lo, hi = display_range(ck)
    again = measure_all(denormalise(decode(ck, stats.codes[:4]), lo, hi), ck.spec.sample_rate, ["pitch"])["pitch"]
    np.testing.assert_allclose(values[:4], again.numpy(), rtol=1e-4)
    assert 60 <= float(np.median(values)) <= 300  # spoken digits: a voice's f0


def test_a_model_without_named_directions_shows_none(shipped_studio, monkeypatch):
    """Statistics saved before issue #14 (or too few codes): no named sliders, no heading, and moves ignore
    named values."""
    import dataclasses

    ex = shipped_studio.explore
    ck_path = shipped_studio.initial_checkpoint
    ck, stats = shipped_studio.ws.load(ck_path), shipped_studio.ws.latent_stats(ck_path)
    old = dataclasses.replace(stats, named=None)
    monkeypatch.setattr(ex.studio, "model", lambda ckpt: (ck, old, ""))
    assert named_slider_specs(old) == []
    out = ex.setup(ck_path, "zero", 1)
    assert out[ex.named_note]["visible"] is False and not any(out[s]["visible"] for s in ex.named)
    codes, _ = spy_render(monkeypatch)
    ex.move(ck_path, None, *[0.0] * MAX_SLIDERS, "zero", 1, *[5.0] * MAX_NAMED)
    torch.testing.assert_close(codes[-1].reshape(stats.latent_shape),
                               from_sliders(old, [0.0] * len(slider_specs(old)), torch.zeros(stats.latent_shape)))


def test_a_store_maps_colours_are_measured_on_its_decoded_codes(shipped_studio):
    """A store's clips are not the saved codes: their colours come from decoding them (here the first saved codes,
    so the saved measures say what they must be)."""
    from studio.latent_space import map_colours
    from vae.latents import LatentMap

    ck_path = shipped_studio.initial_checkpoint
    ck, stats = shipped_studio.ws.load(ck_path), shipped_studio.ws.latent_stats(ck_path)
    m = LatentMap(np.zeros((5, 2)), stats.codes[:5], [None] * 5, [f"c{i}" for i in range(5)], list(range(5)), "store")
    values, title = map_colours(ck, stats, m, "length")
    assert title == "share of active frames (% of the window), decoded"
    np.testing.assert_allclose(values, 100 * stats.named.values[:5, stats.named.names.index("length")].numpy(),
                               rtol=1e-5)
    assert map_colours(ck, stats, m, "label") is None
