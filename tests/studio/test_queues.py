"""The app's queue: slider moves have a worker group of their own, apart from reconstructions and dataset
builds (so those cannot hold the sliders up), and queue positions are not broadcast after every job."""

from __future__ import annotations

import pytest
from app_helpers import make_workspace

from studio.jobs import TrainingJobs
from studio.tabs.explore import SLIDER_WORKERS


@pytest.fixture(scope="module")
def demo_and_app(tmp_path_factory, fsdd_dir, trained):
    from app import create_app

    ws = make_workspace(tmp_path_factory.mktemp("queues"), fsdd_dir, trained[0])
    return create_app(ws, jobs=TrainingJobs(lambda *a, **k: iter(())))


def groups(demo) -> dict[str, tuple[str, object]]:
    """api name -> (concurrency group, limit) of every named event."""
    return {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values() if fn.api_name}


def test_slider_moves_have_their_own_worker_group(demo_and_app):
    demo, app = demo_and_app
    g = groups(demo)
    assert g["explore_move"] == g["explore_release"] == ("explore_move", SLIDER_WORKERS)
    # every slider's drag and release events are in it (not only the first slider's, which has the API name), the
    # named directions' sliders too, and nothing else is
    sliders = {s._id for s in [*app.explore.sliders, *app.explore.named]}
    by_slider = [fn for fn in demo.fns.values() if any(t[0] in sliders for t in fn.targets)]
    assert sorted(t[1] for fn in by_slider for t in fn.targets) == sorted(["input", "release"] * len(sliders))
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in by_slider} == {("explore_move", SLIDER_WORKERS)}
    assert [fn for fn in demo.fns.values() if fn.concurrency_id == "explore_move" and fn not in by_slider] == []
    assert g["reconstruct"] == ("reconstruct", 1)  # one at a time: a core stays free for the sliders
    assert g["build_store"][0] == g["download_fsdd"][0] != g["reconstruct"][0]
    # the training status poll never waits in a queue
    assert g["train_status"][1] is None


def test_the_queue_sends_positions_periodically_not_after_every_job(demo_and_app):
    from app import QUEUE

    demo, _ = demo_and_app
    demo.queue(**QUEUE)
    assert demo._queue.live_updates is False and demo._queue.update_intervals == QUEUE["status_update_rate"] > 0
    assert demo._queue.default_concurrency_limit == QUEUE["default_concurrency_limit"]


def test_the_queue_does_not_summarise_its_event_history_after_every_event(demo_and_app):
    from app import QUEUE

    demo, _ = demo_and_app
    demo.queue(**QUEUE)
    assert demo._queue.ANAYLTICS_CACHE_FREQUENCY >= 1000  # Gradio's default, 1, rebuilt a DataFrame per event
