"""The Explore tab on a conditional model (issue #14): a label picker, held while the sliders move and along an
interpolation; another label replays the same code; a model without labels has no picker."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
import torch
from app_helpers import make_workspace
from conftest import TRAIN_KW, tiny_model_cfg

from preprocessing.errors import InputError
from studio.latent_space import slider_specs
from studio.tabs.explore import MAX_NAMED
from vae import generate


@pytest.fixture(scope="module")
def cond_studio(tmp_path_factory, fsdd_dir, tiny_store):
    from app import create_app
    from vae.train import train

    run = tmp_path_factory.mktemp("runs") / "cond"
    list(train(tiny_store.path, run, model_cfg=tiny_model_cfg(), condition="label", **{**TRAIN_KW, "epochs": 2}))
    ws = make_workspace(tmp_path_factory.mktemp("studio"), fsdd_dir, run)
    return create_app(ws, checkpoint=str(ws.checkpoints_dir / "digits"))[1]


def test_label_picker_offers_the_models_labels(cond_studio):
    ex, ck = cond_studio.explore, cond_studio.initial_checkpoint
    update = ex.label_choices(ck, None)[ex.label]
    assert update["choices"] == [("0", "0"), ("1", "1"), ("2", "2")] or update["choices"] == ["0", "1", "2"]
    assert update["value"] == "0" and update["visible"] is True
    assert ex.label_choices(ck, "2")[ex.label]["value"] == "2"
    assert ex.label_choices(None, "2")[ex.label]["visible"] is False


def test_sliders_hold_the_label_and_another_label_replays_the_code(cond_studio, monkeypatch):
    ex, ckpt = cond_studio.explore, cond_studio.initial_checkpoint
    ck, stats, _ = ex.studio.model(ckpt)
    calls: list = []  # (code, label) of every render
    real = generate.render

    def render(ck, z, *args, **kwargs):
        calls.append((z.reshape(-1).clone(), kwargs.get("label")))
        return real(ck, z, *args, **kwargs)

    monkeypatch.setattr("studio.tabs.explore.render", render)
    values = [0.5] + [0.0] * 5
    residual = torch.zeros(ck.model_cfg.latent_shape).tolist()
    ex.move(ckpt, residual, *values, "zero", 1, *[0.0] * MAX_NAMED, "1")
    ex.move(ckpt, residual, *values, "zero", 1, *[0.0] * MAX_NAMED, "2")
    ex.move(ckpt, residual, *values, "zero", 1)  # an API call without the label: none in particular
    assert [label for _, label in calls] == ["1", "2", None] and torch.equal(calls[0][0], calls[1][0])
    out = ex.start_point(ckpt, "example", ex.ws.examples()[0][1], None, 1.0, "zero", 1, "0")
    assert ex.img in out and calls[-1][1] == "0" and len(slider_specs(stats)) >= 1


def test_interpolation_decodes_every_step_as_the_label(cond_studio, monkeypatch):
    ex, ckpt = cond_studio.explore, cond_studio.initial_checkpoint
    seen = []
    real = generate.render_many

    def render_many(ck, z, phase, n_iter, label=None):
        seen.append(label)
        return real(ck, z, phase, n_iter, label)

    monkeypatch.setattr("studio.tabs.explore.render_many", render_many)
    ex.interpolate(ckpt, "origin", "prior", 3, "zero", 1, "1")
    ex.interpolate(ckpt, "origin", "prior", 3, "zero", 1)
    assert seen == ["1", None]


def test_a_prior_sample_with_a_label_comes_from_that_labels_gaussian(cond_studio, monkeypatch):
    """"Random sample from the prior" with a label picked draws the code from the label's Gaussian."""
    ex, ckpt = cond_studio.explore, cond_studio.initial_checkpoint
    _, stats, _ = ex.studio.model(ckpt)
    codes = []
    real = generate.render

    def render(ck, z, *args, **kwargs):
        codes.append(z.clone())
        return real(ck, z, *args, **kwargs)

    monkeypatch.setattr("studio.tabs.explore.render", render)
    k = stats.label_names.index("2")
    for _ in range(40):
        ex.start_point(ckpt, "prior", None, None, 0.05, "zero", 1, "2")
    z = torch.stack(codes)  # (40, D); temperature 0.05: close to the label's mean, nearer it than to the others'
    assert float((z - stats.label_means[k]).abs().max()) < 0.05 * 6 * float(stats.label_chol[k].norm(dim=1).max())
    dist = torch.cdist(z.mean(0, keepdim=True), stats.label_means)[0]  # (L,)
    assert int(dist.argmin()) == k


def test_a_point_picked_on_the_map_plays_as_its_clips_label(cond_studio, monkeypatch):
    ex, ckpt = cond_studio.explore, cond_studio.initial_checkpoint
    seen = []
    real = generate.render

    def render(ck, z, *args, **kwargs):
        seen.append(kwargs.get("label"))
        return real(ck, z, *args, **kwargs)

    monkeypatch.setattr("studio.tabs.explore.render", render)
    state = ex.draw_map(ckpt, "")[ex.map_state]
    m, geom = state["map"], state["axes"]
    px, py = geom.to_pixels(m.xy)[1]
    out = ex.pick_on_map(ckpt, state, "zero", 1, gr.SelectData(None, {"index": [px, py], "value": None}))
    assert m.labels[1] in ("0", "1", "2") and seen == [m.labels[1]] and out[ex.label] == m.labels[1]


def test_export_as_onnx_offers_a_zip_of_the_three_files(cond_studio):
    """The Explore tab's "Export as ONNX": the picked model's graphs and sound_vae.json, zipped for download."""
    import zipfile

    pytest.importorskip("onnx")
    ex, ckpt = cond_studio.explore, cond_studio.initial_checkpoint
    path = ex.export_onnx(ckpt)
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))  # files, not the folder entry
    stem = f"{Path(ckpt).name}-onnx"
    assert Path(path).name == f"{stem}.zip" and Path(path).is_relative_to(ex.ws.audio_dir)
    assert names == [f"{stem}/{n}" for n in ("decoder.onnx", "encoder.onnx", "sound_vae.json")]
    with pytest.raises(InputError, match="pick a model first"):
        ex.export_onnx(None)
