"""Browser test: Chromium (Debian's, via Playwright's sync API) against the running app.

Opens the page, visits every tab (a screenshot of each goes to ``test-output/screenshots/``), runs
a reconstruction, drags a latent slider and waits for the audio source to change, and checks that
no error toast appeared. Skips only when no Chromium is installed; never downloads a browser.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_helpers import launch, make_workspace

ROOT = Path(__file__).resolve().parents[1]
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
def url(tmp_path_factory, fsdd_dir, trained):
    ws = make_workspace(tmp_path_factory.mktemp("browser"), fsdd_dir, trained[0])
    demo, _, url = launch(ws)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def page(url):
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


def test_dragging_a_slider_changes_the_sound(page):
    page.get_by_role("tab", name="Explore").click()
    slider = page.locator("#ex-slider-1 input[type=range]")
    slider.wait_for(state="visible", timeout=30000)
    page.wait_for_function(f"({SRC_JS})('ex-audio')", timeout=30000)
    before = audio_src(page, "ex-audio")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    for k in range(1, 9):  # drag to the right in steps, as a person would
        page.mouse.move(box["x"] + box["width"] * (0.5 + 0.05 * k), y, steps=2)
        page.wait_for_timeout(80)
    # the sound changes while the slider is still held down
    page.wait_for_function(f"({SRC_JS})('ex-audio') !== {before!r}", timeout=20000)
    page.mouse.up()
    page.wait_for_timeout(1000)
    assert audio_src(page, "ex-audio") != before
    page.screenshot(path=str(SHOTS / "explore-dragged.png"), full_page=True)
    assert error_toasts(page) == []
    assert page.errors == []
