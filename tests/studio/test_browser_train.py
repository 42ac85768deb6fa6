"""The Train tab in Chromium, over a scripted training loop (no CPU spent on training).

A reload while a job runs lands on the Train tab, re-attached: the loss curves are drawn (lines,
legend), the status is the job's, and Stop is enabled only while something runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from app_helpers import launch, make_workspace, wait_for
from conftest import TINY
from test_browser import CHROMIUM, GRADIO_WARNINGS, sync_api

from studio.jobs import TrainingJobs
from vae.train import Preview, TrainEvent

pytestmark = [
    *GRADIO_WARNINGS,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (looked for /usr/bin/chromium and "
                                                "chromium on PATH; set $CHROMIUM); CI installs it"),
]
EPOCHS, STEPS = 40, 4


def held_training(done_epochs: int = 3):
    """A stand-in for vae.train.train: ``done_epochs`` epochs at once, then a step every 50 ms until
    stopped (the job stays active, as a long real run does)."""

    def fake(data, output, resume=False, stop=None, **overrides):
        spec = np.full(TINY.shape, 0.5, dtype=np.float32)
        for e in range(done_epochs):
            losses = {"loss": 10.0 - e, "recon": 0.1 / (e + 1), "kl": 2.0 + e}
            yield TrainEvent("epoch", e + 1, EPOCHS, STEPS, STEPS, losses, {k: v + 1 for k, v in losses.items()},
                             preview=Preview(0, "0_alice_0.wav", spec, spec))
        step = 0
        while not stop.wait(0.05):
            step = step % STEPS + 1
            yield TrainEvent("step", done_epochs, EPOCHS, step, STEPS, {"loss": 7.0, "recon": 0.02, "kl": 5.0},
                             samples_per_s=100.0, eta_s=60.0)
        yield TrainEvent("stopped", done_epochs, EPOCHS, step, STEPS, message="stopped on request")

    return fake


@pytest.fixture(scope="module")
def server(tmp_path_factory, fsdd_dir, trained, tiny_store):
    ws = make_workspace(tmp_path_factory.mktemp("browser-train"), fsdd_dir, trained[0])
    demo, app, url = launch(ws, jobs=TrainingJobs(held_training(), step_every_s=0))
    yield {"url": url, "app": app, "store": tiny_store}
    app.jobs.stop()
    app.jobs.wait(30)
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


# The line marks and legend labels Vega drew in a plot (Gradio renders plots as SVG).
PLOT_JS = """id => {
  const svg = document.querySelector(`#${id} svg`);
  if (!svg) return null;
  const lines = [...svg.querySelectorAll('.mark-line path')].map(p => (p.getAttribute('d') || '').length);
  const legend = [...svg.querySelectorAll('.role-legend text')].map(t => t.textContent);
  return {width: svg.getBoundingClientRect().width, lines, legend};
}"""


def drawn(page, elem_id: str = "tr-loss") -> dict:
    """Wait until the plot has two drawn lines and their legend; return what was drawn."""
    page.wait_for_function(f"(() => {{ const p = ({PLOT_JS})('{elem_id}'); return p && p.width > 200 && "
                           "p.lines.filter(n => n > 20).length >= 2 && p.legend.includes('validation'); })()",
                           timeout=30000)
    return page.evaluate(PLOT_JS, elem_id)


def test_reload_during_training_reattaches_with_curves(server, browser):
    app = server["app"]
    warnings: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: warnings.append(m.text) if m.type in ("warning", "error") else None)
    page.goto(server["url"])
    page.get_by_role("tab", name="Train").click()
    stop = page.get_by_role("button", name="Stop")
    stop.wait_for(timeout=30000)
    assert stop.is_disabled()  # nothing runs yet
    app.jobs.start(server["store"].path, app.ws.runs_dir / "held", epochs=EPOCHS)
    wait_for(lambda: app.jobs.snapshot().epoch >= 3, timeout=30)

    page.reload()
    # the page comes back on the Train tab, re-attached to the running job
    page.wait_for_function("() => document.querySelector('[role=tab][aria-selected=true]')"
                           "?.textContent.trim() === 'Train'", timeout=30000)
    plot = drawn(page)
    assert set(plot["legend"]) >= {"training", "validation"}
    progress = page.locator("#tr-progress")
    page.wait_for_function("() => /held: epoch \\d+\\/40/.test(document.querySelector('#tr-progress').innerText)",
                           timeout=30000)
    assert "No training job yet" not in progress.inner_text()
    wait_for(lambda: stop.is_enabled(), timeout=30)

    stop.click()
    assert app.jobs.wait(30).status == "stopped"
    page.wait_for_function("() => /stopped/.test(document.querySelector('#tr-progress').innerText)", timeout=30000)
    text = progress.inner_text()
    assert text.count("stopped") == 1 and text.count("epoch") == 1, text  # one clear sentence
    wait_for(lambda: stop.is_disabled(), timeout=30)

    # after the job, a reload lands on the default tab; showing Train draws the curves again
    page.reload()
    page.get_by_role("tab", name="Train").click()
    assert set(drawn(page)["legend"]) >= {"training", "validation"}
    # empty charts are not drawn at all (Vega warned "Infinite extent" for each; the version notice is Gradio's)
    assert not [w for w in warnings if "Infinite extent" in w], warnings
    page.close()


def test_a_restarted_app_reattaches_to_the_training_process(tmp_path_factory, fsdd_dir, trained, tiny_store, browser):
    """Training is its own process: an app started while it runs (a restart) finds it, lands on the Train
    tab with its progress and curves, and its Stop button stops it (the process saves last/ and exits)."""
    import os
    import signal

    from vae.events import lock_holder

    ws = make_workspace(tmp_path_factory.mktemp("restart"), fsdd_dir, trained[0])
    run = ws.runs_dir / "live"
    before = TrainingJobs(threads=1)  # the app before the restart
    before.start(tiny_store.path, run, epochs=500, batch_size=8, latent_dim=2, device="cpu")
    demo = None
    try:
        wait_for(lambda: before.snapshot().epoch >= 2, timeout=120)
        demo, app, url = launch(ws)  # the restarted app: a new job manager of its own
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_function("() => document.querySelector('[role=tab][aria-selected=true]')"
                               "?.textContent.trim() === 'Train'", timeout=30000)
        page.wait_for_function("() => /live: epoch \\d+\\/500/.test(document.querySelector('#tr-progress').innerText)",
                               timeout=30000)
        assert set(drawn(page)["legend"]) >= {"training", "validation"}
        stop = page.get_by_role("button", name="Stop")
        wait_for(lambda: stop.is_enabled(), timeout=30)
        stop.click()
        assert app.jobs.wait(60).status == "stopped"
        assert before.wait(60).status == "stopped"
        assert lock_holder(run) is None and (run / "last" / "training_state.pt").is_file()
        page.wait_for_function("() => /stopped/.test(document.querySelector('#tr-progress').innerText)",
                               timeout=30000)
        page.close()
    finally:
        if demo is not None:
            demo.close()
        pid = lock_holder(run)
        if pid:
            os.kill(pid, signal.SIGKILL)
