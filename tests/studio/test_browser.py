"""Browser test: Chromium (Debian's, via Playwright's sync API) against the running app.

Opens the page, visits every tab (a screenshot of each goes to ``test-output/screenshots/``), runs
a reconstruction, drags a latent slider and checks that the sound served is the one for the slider
values the page shows (zero phase, so a sound depends on those values alone), and checks that no
error toast appeared. Skips only when no Chromium is installed; never downloads a browser.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from app_helpers import LSB, launch, make_workspace, slider_code

from studio.latent_space import slider_specs
from vae.generate import render
from vae.latents import zero_sliders

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "screenshots"
TABS = ("Dataset", "Train", "Reconstruct", "Explore")


def chromium_path() -> str | None:
    for cand in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file():
            return cand
    return None


CHROMIUM = chromium_path()
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
# gradio's queue uses pandas APIs that pandas 3 deprecates; not ours to fix
GRADIO_WARNINGS = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
                   pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
pytestmark = [
    *GRADIO_WARNINGS,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (looked for /usr/bin/chromium and "
                                                "chromium on PATH; set $CHROMIUM); CI installs it"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, fsdd_dir, trained):
    ws = make_workspace(tmp_path_factory.mktemp("browser"), fsdd_dir, trained[0])
    demo, app, url = launch(ws)
    yield {"url": url, "ws": ws, "ckpt": app.initial_checkpoint}
    demo.close()


@pytest.fixture(scope="module")
def page(server):
    url = server["url"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(url)
        pg.get_by_role("tab", name="Reconstruct").wait_for(timeout=30000)
        pg.errors = errors
        yield pg
        browser.close()


def error_toasts(pg) -> list[str]:
    return pg.locator("[data-testid='toast-body'].error").all_inner_texts()


# The URL an Audio component plays: its waveform player loads the file itself, so the component's
# download link (same URL) is the reliable place to read it from.
SRC_JS = ("id => { const a = document.querySelector(`#${id} a[data-testid=download-link]`); "
          "return a ? a.getAttribute('href') : ''; }")


def audio_src(pg, elem_id: str) -> str:
    return pg.evaluate(SRC_JS, elem_id)


def test_every_tab_renders(page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for tab in TABS:
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SHOTS / f"{tab.lower()}.png"), full_page=True)
        assert (SHOTS / f"{tab.lower()}.png").stat().st_size > 10_000
    assert error_toasts(page) == []


def test_reconstruction_runs(page):
    page.get_by_role("tab", name="Reconstruct").click()
    page.get_by_role("button", name="Reconstruct", exact=True).click()
    page.get_by_text("log-spectral distance").first.wait_for(timeout=30000)
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "reconstruct-result.png"), full_page=True)
    assert error_toasts(page) == []


# The exact value of each shown slider: its number box (the range input rounds to the slider's step).
VALUES_JS = ("() => [...Array(6).keys()].map(k => document.querySelector(`#ex-slider-${k + 1}`))"
             ".filter(e => e && e.offsetParent !== null)"
             ".map(e => parseFloat(e.querySelector('input[type=number]').value))")
ZERO_PHASE = "Zero phase (the study's inverse STFT)"


def served_sound(pg, elem_id: str) -> np.ndarray:
    """The samples of the file an Audio component offers (fetched as the browser would)."""
    href = audio_src(pg, elem_id)
    assert href, f"#{elem_id} has no audio"
    data, _ = sf.read(io.BytesIO(pg.request.get(href).body()), dtype="float32")
    return data


def wait_for_sound_of_sliders(pg, server, timeout: float = 30.0) -> tuple[list[float], np.ndarray]:
    """Poll until the Explore player holds the sound of the slider values shown (zero phase, from the
    origin's residual); return (values, sound). Fails if it never does, e.g. when the values shown
    never reach the server, or reach it shifted."""
    ck, stats = server["ws"].load(server["ckpt"]), server["ws"].latent_stats(server["ckpt"])
    _, residual = zero_sliders(stats, torch.zeros(ck.model_cfg.latent_dim), len(slider_specs(stats)))
    end, err, values = time.monotonic() + timeout, None, None
    while time.monotonic() < end:
        values = pg.evaluate(VALUES_JS)
        assert len(values) == len(slider_specs(stats))
        expected = np.clip(render(ck, slider_code(stats, values, residual), "zero").wave, -1, 1)
        got = served_sound(pg, "ex-audio")
        err = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        if err <= 1.5 * LSB and pg.evaluate(VALUES_JS) == values:
            return values, got
        pg.wait_for_timeout(200)
    raise AssertionError(f"the sound never matched the sliders {values} (off by {err / LSB:.0f} LSB)")


def test_dragging_a_slider_changes_the_sound(page, server):
    page.get_by_role("tab", name="Explore").click()
    slider = page.locator("#ex-slider-1 input[type=range]")
    slider.wait_for(state="visible", timeout=30000)
    page.wait_for_function(f"({SRC_JS})('ex-audio')", timeout=30000)
    # deterministic phase, then back to the start point: the origin, rendered with it
    page.get_by_text("Sound quality").click()
    page.get_by_label(ZERO_PHASE).filter(visible=True).check()
    page.get_by_role("button", name="Go to start point").click()
    start_values, start = wait_for_sound_of_sliders(page, server)
    assert start_values == [0.0] * len(start_values)  # the origin: every slider exactly 0
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    for k in range(1, 9):  # drag to the right in steps, as a person would
        page.mouse.move(box["x"] + box["width"] * (0.5 + 0.05 * k), y, steps=2)
        page.wait_for_timeout(80)
    page.mouse.up()
    # the sound now is the one for the values shown, which differ from the start in slider 1 only
    values, dragged = wait_for_sound_of_sliders(page, server)
    assert values[0] > start_values[0] + 0.5 and values[1:] == start_values[1:]
    assert np.abs(dragged - start).max() > 50 * LSB
    page.screenshot(path=str(SHOTS / "explore-dragged.png"), full_page=True)
    # back to the start point: the same values give the very same sound again
    page.get_by_role("button", name="Go to start point").click()
    # the player still holds the dragged sound until the answer arrives: wait for the sliders to move back
    page.wait_for_function(f"({VALUES_JS})().some((v, i) => v !== {json.dumps(values)}[i])", timeout=30000)
    values, again = wait_for_sound_of_sliders(page, server)
    assert values == start_values and np.array_equal(again, start)
    assert error_toasts(page) == []
    assert page.errors == []


def test_page_uses_fonts_every_system_has(page):
    """The theme's web font cannot load offline; its fallback drew small capitals oddly ("VᴀE")."""
    family = page.evaluate("() => getComputedStyle(document.querySelector('.gradio-container')).fontFamily")
    assert family.startswith("ui-sans-serif, system-ui") and "Source Sans" not in family, family


def test_no_store_means_no_store_sources(page):
    page.get_by_role("tab", name="Reconstruct").click()
    sources = page.locator("#rec-source").inner_text()
    assert "Example clip" in sources and "Upload or record" in sources
    assert "store" not in sources  # this workspace has no dataset store yet


def rec_result(pg) -> tuple[str, str]:
    """(metrics text, original image URL) of the Reconstruct result on screen."""
    src = pg.evaluate("() => document.querySelector('#rec-original-image img')?.getAttribute('src') || ''")
    return pg.locator("#rec-metrics").inner_text(), src


def test_changed_settings_mark_the_result_stale(page):
    page.get_by_role("tab", name="Reconstruct").click()
    page.get_by_role("button", name="Reconstruct", exact=True).click()
    page.wait_for_function("() => !/Out of date/.test(document.querySelector('#rec-info').innerText) && "
                           "/log-spectral/.test(document.querySelector('#rec-metrics').innerText)", timeout=30000)
    # spectrogram downloads are named for what they show, not image.png
    _, src = rec_result(page)
    assert re.search(r"0_alice_0_digits_original\.png$", src), src
    iterations = page.locator("#rec-iterations input[type=range]")
    assert iterations.is_enabled()
    page.locator("#rec-phase").get_by_label(ZERO_PHASE).check()
    page.wait_for_function("() => /Out of date/.test(document.querySelector('#rec-info').innerText)", timeout=10000)
    wait_until(lambda: iterations.is_disabled())  # Griffin-Lim iterations mean nothing under zero phase
    page.get_by_role("button", name="Reconstruct", exact=True).click()
    page.wait_for_function("() => !/Out of date/.test(document.querySelector('#rec-info').innerText)", timeout=30000)
    assert error_toasts(page) == []


def test_a_reconstruct_error_keeps_the_last_result(page):
    page.get_by_role("tab", name="Reconstruct").click()
    page.wait_for_function("() => /log-spectral/.test(document.querySelector('#rec-metrics').innerText)",
                           timeout=30000)
    before = rec_result(page)
    page.locator("#rec-source").get_by_label("Upload or record").check()
    page.get_by_role("button", name="Reconstruct", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll(\"[data-testid='toast-body'].error\").length > 0",
                           timeout=30000)
    toast = " ".join(error_toasts(page))
    assert "no audio given" in toast and "(no file)" not in toast, toast
    page.wait_for_timeout(500)
    assert rec_result(page) == before  # the last good result stays on screen
    for elem in ("#rec-metrics", "#rec-original-image", "#rec-reconstruction-image"):
        assert page.locator(elem).get_by_text("Error", exact=True).count() == 0, elem
    for close in page.locator("[data-testid='toast-body'].error button").all():
        close.click()
    page.locator("#rec-source").get_by_label("Example clip").check()


def wait_until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.1)


def test_map_pick_shows_the_clip_next_to_the_map(page, server):
    from studio import plots
    from vae.latents import checkpoint_map

    page.get_by_role("tab", name="Explore").click()
    page.get_by_role("button", name="Draw map").click()
    image = page.locator("#ex-map img")
    image.wait_for(timeout=30000)
    page.wait_for_function("() => document.querySelector('#ex-map img').naturalWidth > 0", timeout=30000)
    # where the page drew clip 0 (the same figure, drawn here)
    m = checkpoint_map(server["ws"].latent_stats(server["ckpt"]))
    _, geom = plots.latent_map_image(m.xy, m.labels, title=f"{len(m.xy)} clips on sliders 1 and 2")
    px, py = geom.to_pixels(m.xy)[0]
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    natural = page.evaluate("() => { const i = document.querySelector('#ex-map img'); "
                            "return [i.naturalWidth, i.naturalHeight]; }")
    page.mouse.click(box["x"] + px * box["width"] / natural[0], box["y"] + py * box["height"] / natural[1])
    picked = m.names[geom.nearest(m.xy, px, py)]  # clip 0, or one drawn on the very same spot
    page.wait_for_function("() => /Picked/.test(document.querySelector('#ex-map-info').innerText)", timeout=30000)
    info = page.locator("#ex-map-info").inner_text()
    assert picked in info and "codes saved with the model" in info  # why there is no original to play
    page.wait_for_function(f"({SRC_JS})('ex-map-audio')", timeout=30000)
    # the result is next to the map, in view, not up by the sliders
    result = page.locator("#ex-map-image").bounding_box()
    assert result["y"] >= 0 and result["y"] + result["height"] / 2 <= 1000
    assert abs(result["y"] - box["y"]) < box["height"]
    assert error_toasts(page) == []


def test_build_a_store_and_every_tab_offers_it(page, tmp_path_factory, fsdd_dir):
    """Last in this module: it adds the workspace's first store. The skipped file's reason is shown
    whole (wrapped, not cut off at the edge), and the new store appears in the other tabs at once."""
    folder = tmp_path_factory.mktemp("to-build")
    for f in sorted(fsdd_dir.glob("*.wav"))[:6]:
        shutil.copyfile(f, folder / f.name)
    (folder / "a_recording_that_is_broken.wav").write_bytes(b"this is not audio")
    page.get_by_role("tab", name="Dataset").click()
    page.locator("#ds-folder textarea, #ds-folder input").first.fill(str(folder))
    page.get_by_label("Store name").fill("from-the-browser")
    page.get_by_role("button", name="Build store").click()
    page.get_by_text("Store `from-the-browser`").or_(page.get_by_text("Store from-the-browser")).first.wait_for(
        timeout=60000)
    # the reason as shown (the table also keeps hidden copies of its cells, for measuring): whole, wrapped
    # inside its cell, and inside the window
    reason_js = """() => [...document.querySelectorAll('#ds-skipped span.text')]
        .filter(e => /not readable as audio/.test(e.textContent) && e.getBoundingClientRect().width > 0)
        .map(e => ({text: e.textContent, scroll: e.scrollWidth, width: e.clientWidth,
                    right: e.getBoundingClientRect().right, window: document.documentElement.clientWidth}))"""
    page.wait_for_function(f"({reason_js})().length > 0", timeout=30000)
    shown = page.evaluate(reason_js)
    for cell in shown:
        assert "a_recording_that_is_broken.wav" in cell["text"] and cell["text"].rstrip().endswith(")")
        assert cell["scroll"] <= cell["width"] + 1 and cell["right"] <= cell["window"], cell
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === 'from-the-browser')",
                           timeout=30000)
    page.get_by_role("tab", name="Reconstruct").click()
    page.wait_for_function("() => /Clip from a store/.test(document.querySelector('#rec-source').innerText)",
                           timeout=30000)
    assert error_toasts(page) == []
