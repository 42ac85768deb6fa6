"""The Explore tab on a temporal model (issue #11): what sliders, interpolation and the map mean for
a latent that is a sequence of codes (D, T'), and that the tab holds to those meanings."""

from __future__ import annotations

import gradio as gr
import pytest
import torch
from app_helpers import make_workspace, spy_render
from conftest import TRAIN_KW
from test_temporal import tiny_temporal

from studio import plots
from studio.latent_space import slider_specs
from vae.latents import from_sliders, to_sliders


@pytest.fixture(scope="module")
def temporal_studio(tmp_path_factory, fsdd_dir, tiny_store):
    from app import create_app
    from vae.train import train

    run = tmp_path_factory.mktemp("runs") / "temporal"
    list(train(tiny_store.path, run, model_cfg=tiny_temporal(), **{**TRAIN_KW, "epochs": 2}))
    ws = make_workspace(tmp_path_factory.mktemp("studio"), fsdd_dir, run)
    return create_app(ws, checkpoint=str(ws.checkpoints_dir / "digits"))[1]


def test_setup_states_the_temporal_meanings(temporal_studio):
    ex = temporal_studio.explore
    ck = temporal_studio.initial_checkpoint
    out = ex.setup(ck, "zero", 1)
    caption = out[ex.info]
    assert "a sequence of 16 codes of 4 numbers" in caption
    assert "one offset to every moment" in caption and "moment by moment" in caption and "path" in caption
    assert "Random samples come from a small model, learned after the VAE" in caption
    assert torch.tensor(out[ex.residual]).shape == (4, 16)  # the state keeps every frame


def test_sliders_offset_every_frame_of_the_start_clip(temporal_studio, monkeypatch):
    ex = temporal_studio.explore
    ck = temporal_studio.initial_checkpoint
    stats = temporal_studio.ws.latent_stats(ck)
    n = len(slider_specs(stats))
    codes, _ = spy_render(monkeypatch)
    clip = stats.codes[0]  # (4, 16): a training clip's sequence
    values, residual = to_sliders(stats, clip, n, step=0.05)
    ex.move(ck, residual.tolist(), *values, *[0.0] * (6 - n), "zero", 1)
    torch.testing.assert_close(codes[-1].reshape(4, 16), clip, atol=1e-5, rtol=0)
    moved = [values[0] + 1.0, *values[1:]]
    ex.move(ck, residual.tolist(), *moved, *[0.0] * (6 - n), "zero", 1)
    offset = codes[-1].reshape(4, 16) - clip
    expected = (stats.component_sd[0] * stats.components[0])[:, None].expand(4, 16)
    torch.testing.assert_close(offset, expected, atol=1e-5, rtol=0)  # the same offset on every frame
    torch.testing.assert_close(from_sliders(stats, moved, residual), codes[-1].reshape(4, 16), atol=1e-5, rtol=0)


def test_map_places_clips_at_their_mean_frame_and_draws_the_picked_path(temporal_studio, monkeypatch):
    ex = temporal_studio.explore
    ck = temporal_studio.initial_checkpoint
    stats = temporal_studio.ws.latent_stats(ck)
    state = ex.draw_map(ck, "")[ex.map_state]
    m, geom = state["map"], state["axes"]
    assert m.codes.shape[1:] == (4, 16)
    expected_xy = (stats.project(m.codes.mean(-1)) / stats.component_sd[:2]).numpy()
    assert m.xy == pytest.approx(expected_xy, abs=1e-5)
    drawn = {}
    real = plots.latent_map_image

    def spy(*args, **kwargs):
        drawn.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(plots, "latent_map_image", spy)
    px, py = geom.to_pixels(m.xy)[2]
    ex.pick_on_map(ck, state, "zero", 1, gr.SelectData(None, {"index": [px, py], "value": None}))
    assert drawn["highlight"] == 2
    path = drawn["trajectory"]
    assert path.shape == (16, 2)
    assert path.mean(0) == pytest.approx(m.xy[2], abs=1e-4)  # the path's centre is the clip's dot


def test_prior_start_samples_the_learned_prior(temporal_studio, monkeypatch):
    from vae.prior import sample_prior

    ex = temporal_studio.explore
    ck = temporal_studio.initial_checkpoint
    model = temporal_studio.ws.load(ck)
    codes, _ = spy_render(monkeypatch)
    calls = []
    monkeypatch.setattr("vae.prior.sample_prior", lambda *a, **k: calls.append(a) or sample_prior(*a, **k))
    ex.start_point(ck, "prior", None, None, 0.7, "zero", 1)
    assert len(calls) == 1 and calls[0][0] is model.prior and calls[0][1:4] == (1, 16, 0.7)
    assert codes[-1].shape == (4 * 16,)


def test_interpolation_blends_frame_by_frame(temporal_studio, monkeypatch):
    from studio.tabs import explore

    ex = temporal_studio.explore
    ck = temporal_studio.initial_checkpoint
    seen = []
    real = explore.render_many

    def spy(ck_, z, *args, **kwargs):
        seen.append(z.clone())
        return real(ck_, z, *args, **kwargs)

    monkeypatch.setattr(explore, "render_many", spy)
    ends = ex.setup(ck, "zero", 1)[ex.end_a]["choices"]
    keys = [k for _, k in ends if k.startswith("example:")]
    out = ex.interpolate(ck, keys[0], keys[1], 3, "zero", 1)
    z = seen[-1]
    assert z.shape == (3, 4, 16)
    torch.testing.assert_close(z[1], (z[0] + z[2]) / 2, atol=1e-6, rtol=0)
    assert len(out[ex.step_files]) == 3


def test_train_tab_picks_the_stores_architecture(tiny_store, tmp_path, monkeypatch):
    from studio.tabs import train as train_tab

    assert train_tab.store_arch(None) == "temporal"  # no store: the digits preset's
    assert train_tab.store_arch(str(tmp_path / "not-a-store")) == "temporal"  # unreadable: picking it says why
    monkeypatch.setattr(train_tab, "arch_for", lambda spec: "temporal" if spec == tiny_store.config else "study")
    assert train_tab.store_arch(str(tiny_store.path)) == "temporal"
