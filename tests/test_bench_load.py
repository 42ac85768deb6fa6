"""benchmarks/bench_load.py's arithmetic: training samples from the event log, and its report."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_load


def test_training_rate_counts_samples_between_records(tmp_path):
    n, b = 100, bench_load.BATCH  # 4 steps an epoch: 32, 64, 96, 100 samples
    recs = [{"kind": "start", "t": 0.0},
            {"kind": "step", "epoch": 0, "step": 1, "t": 1.0},
            {"kind": "step", "epoch": 0, "step": 4, "t": 3.0},
            {"kind": "epoch", "epoch": 1, "t": 4.0},
            {"kind": "step", "epoch": 1, "step": 2, "t": 5.0},
            {"kind": "step", "epoch": 2, "step": 3, "t": 9.0}]
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert [bench_load.samples_done(r, n) for r in recs[1:]] == [b, n, n, n + 2 * b, 2 * n + 3 * b]
    r = bench_load.train_rate(log, n, 0.5, 5.5)  # records at 1, 3, 4, 5 s
    assert (r["samples"], r["seconds"], r["records"]) == (n + 2 * b - b, 4.0, 4)
    assert r["samples_per_s"] == pytest.approx((n + b) / 4.0, abs=0.05)
    assert bench_load.train_rate(log, n, 8.0, 20.0)["samples_per_s"] == 0.0  # one record: no rate
    assert bench_load.train_rate(tmp_path / "none", n, 0, 10)["records"] == 0


def test_the_report_names_the_target_and_the_figures():
    req = {k: {"median_ms": 100.0 * (i + 1), "p95_ms": 200.0 * (i + 1), "n": 10, "errors": i, "client_cancelled": 0}
           for i, k in enumerate(bench_load.KINDS)}
    res = {"quick": False, "date": "d", "wall_s": 1.0, "load_start": [0.1], "load_end": [0.2],
           "machine": {"cpu": "c", "cores": 2, "os": "o", "python": "p", "torch": "t", "torchaudio": "ta",
                       "torch_threads": 1},
           "params": {"clients": 20, "duration_s": 60.0, "checkpoint": "ck", "no_train": False, "think_s": 0.0},
           "requests": req, "train_store_clips": 250, "meets_target": False,
           "training": {"alone": {"samples_per_s": 80.0, "seconds": 20.0},
                        "under_load": {"samples_per_s": 40.0, "seconds": 60.0}}}
    text = bench_load.markdown(res)
    assert "| explore_move | 100 | 200 | 10 | 0 | 0 |" in text and "| reconstruct | 300 | 600 | 10 | 2 | 0 |" in text
    assert "80.0 samples/s alone" in text and "40.0 samples/s under the load" in text and "not met" in text
