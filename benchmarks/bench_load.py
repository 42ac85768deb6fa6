"""Responsiveness under load: N clients on the app while a job trains.

Starts the app (``python app.py``) as a subprocess on a free port, with a temporary data folder and the
shipped ``checkpoints/digits``, and starts a training job through it (``/start_training``: the app runs
``python -m vae train`` as its own process). After ``--settle`` seconds of training alone, ``--clients``
gradio_client clients, each its own session, work on the app for ``--duration`` seconds: each drags the
Explore sliders (``/explore_move``, with a ``/explore_release`` every ``RELEASE_EVERY`` requests) back to
back, as a browser does while a slider is held (the next move leaves when the last one is answered);
every ``RECON_CLIENT``-th client also asks for a reconstruction (``/reconstruct``, Griffin-Lim 64) every
``RECON_EVERY`` requests. Outputs are not downloaded (``download_files=False``).

Reported: median and p95 latency per request kind, the errors, and the training throughput (samples/s of
wall-clock time, from the run's event log) alone and under the load.

    .venv/bin/python -m benchmarks.bench_load [--clients 20] [--duration 60] [--think S] [--quick]

``--think`` puts a pause between each client's requests (default none). The clients share this machine
with the app, so their own cost counts against it: see :func:`lighter_clients`.

Training data: FSDD from ``--data`` (a spread of ``TRAIN_FILES`` recordings) when present, else the
example clips. Writes ``<out>/load.json`` and ``<out>/load.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import common

ROOT = common.ROOT
NAME = "load"
TRAIN_FILES = 300
RELEASE_EVERY, RECON_EVERY, RECON_CLIENT = 10, 5, 4
BATCH = 32
TARGET_P95_MS = 1000.0
KINDS = ("explore_move", "explore_release", "reconstruct")
CANCELLED = "cancelled by gradio_client"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--settle", type=float, default=20.0, help="seconds of training alone first (default 20)")
    p.add_argument("--think", type=float, default=0.0, help="seconds each client waits between its requests "
                                                             "(default 0: back to back, as while dragging)")
    p.add_argument("--quick", action="store_true", help="2 clients for 8 s after 5 s: a smoke test")
    p.add_argument("--no-train", action="store_true", help="the same load without a training job")
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "digits"))
    p.add_argument("--data", default=str(common.DEFAULT_DATA), help="shared data folder with fsdd/recordings")
    p.add_argument("--out", default=str(common.DEFAULT_OUT), help="results folder (default benchmarks/results)")
    a = p.parse_args(argv)
    if a.quick:
        a.clients, a.duration, a.settle = min(a.clients, 2), min(a.duration, 8.0), min(a.settle, 5.0)
    return a


# ---------------------------------------------------------------- the app and its training job


def make_store(data_dir: str | Path, stores: Path) -> tuple[Path, int]:
    """A digits store to train on; (its folder, its training clips)."""
    from preprocessing.config import preset
    from preprocessing.store import Store, build_store

    files = common.fsdd_files(data_dir)
    src = (common.link_files(common.spread(files, TRAIN_FILES), stores.parent / "audio") if files
           else ROOT / "examples" / "digits")
    build_store(src, stores / "load", preset("digits"))
    return stores / "load", len(Store(stores / "load").indices("train"))


def start_app(tmp: Path, port: int, checkpoint: str) -> subprocess.Popen:
    """``python app.py`` on ``port`` over the data folder ``tmp/data``; returns once it answers."""
    import httpx

    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(tmp / "app.log", "wb") as log:  # the app keeps its own copy of the file
        app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data-dir", str(tmp / "data"),
                                "--checkpoint", checkpoint], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    end = time.monotonic() + 180
    while time.monotonic() < end:
        if app.poll() is not None:
            raise RuntimeError(f"the app exited with {app.returncode}; see {tmp / 'app.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return app
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    app.kill()
    raise RuntimeError(f"the app did not answer within 180 s; see {tmp / 'app.log'}")


def start_training(url: str, store: Path) -> str:
    """Start a long run through the app, as the Train tab does; its progress line."""
    from gradio_client import Client

    from vae.config import model_config, train_config

    shape = (128, 96)  # the digits preset's
    tc, mc = train_config("default", shape), model_config("default", shape)
    return Client(url, verbose=False).predict(str(store), "default", "load", 10_000, BATCH, tc.lr, mc.latent_dim,
                                              tc.kl_weight, "cpu", api_name="/start_training")


def samples_done(record: dict[str, Any], n_train: int) -> int:
    """Training samples seen by the end of a step or epoch record (the last batch of an epoch is short)."""
    if record["kind"] == "epoch":
        return record["epoch"] * n_train
    return record["epoch"] * n_train + min(record["step"] * BATCH, n_train)


def train_rate(log: Path, n_train: int, t0: float, t1: float) -> dict[str, Any]:
    """Samples/s of wall-clock time between the first and last step/epoch records within [t0, t1]."""
    recs = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    recs = [r for r in recs if r.get("kind") in ("step", "epoch") and t0 <= r["t"] <= t1]
    if len(recs) < 2:
        return {"samples_per_s": 0.0, "samples": 0, "seconds": 0.0, "records": len(recs)}
    samples = samples_done(recs[-1], n_train) - samples_done(recs[0], n_train)
    seconds = recs[-1]["t"] - recs[0]["t"]
    return {"samples_per_s": round(samples / seconds, 1), "samples": samples, "seconds": round(seconds, 1),
            "records": len(recs), "epochs": [recs[0]["epoch"], recs[-1]["epoch"]]}


# ---------------------------------------------------------------- the clients


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system, seconds) used so far by process ``pid`` (Linux ``/proc``), or by this
    process (all its threads) when ``pid`` is None; None where it cannot be read."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, in ticks
    except (OSError, ValueError, IndexError):
        return None


def cpu_shares(before: dict[str, float | None], after: dict[str, float | None], seconds: float) -> dict[str, Any]:
    """Cores each process kept busy between two :func:`cpu_seconds` readings (None where unreadable)."""
    return {k: None if before[k] is None or after[k] is None else round((after[k] - before[k]) / seconds, 2)
            for k in before}


def lighter_clients() -> None:
    """One TLS context for every HTTP client of this process. gradio_client opens a new HTTP client for each
    request, and httpx builds a new TLS context for each (reading the CA bundle), even for plain http to
    127.0.0.1: on 2 cores that load generator's cost, not the app's, came to a third of the CPU time."""
    import functools

    import httpx._transports.default as transport

    made = transport.create_ssl_context
    transport.create_ssl_context = functools.lru_cache(maxsize=4)(made)


class Clients:
    """``n`` gradio_client sessions set up on the Explore tab; :meth:`run` drives them for a while."""

    def __init__(self, url: str, n: int, checkpoint: str):
        from gradio_client import Client

        lighter_clients()

        self.url, self.checkpoint = url, checkpoint
        self.clients = [Client(url, verbose=False, download_files=False) for _ in range(n)]
        setup = [c.predict(checkpoint, "griffinlim", 16, api_name="/explore_setup") for c in self.clients]
        self.n_sliders = sum(bool(s.get("visible")) for s in setup[0][1:7])
        refresh = self.clients[0].predict(None, None, None, None, api_name="/refresh_reconstruct")
        self.example = next(v for _, v in refresh[2]["choices"] if "digits/" in v)
        self.results: list[tuple[str, float, float, str]] = []  # (kind, start, seconds, error)
        self._lock = threading.Lock()

    def request(self, client: Any, i: int, k: int, rng: random.Random, pos: list[float]) -> tuple[str, float, str]:
        """Request ``k`` of client ``i``: (kind, seconds, error or "")."""
        if i % RECON_CLIENT == 0 and k % RECON_EVERY == RECON_EVERY - 1:
            kind, args = "reconstruct", (self.checkpoint, "example", self.example, None, None, None, "griffinlim", 64)
        else:
            s = rng.randrange(self.n_sliders)
            pos[s] = round(min(3.0, max(-3.0, pos[s] + rng.gauss(0, 0.3))) / 0.05) * 0.05
            kind = "explore_release" if k % RELEASE_EVERY == RELEASE_EVERY - 1 else "explore_move"
            args = (self.checkpoint, *pos, "griffinlim", 16 if kind == "explore_move" else 64)
        t0 = time.perf_counter()
        try:
            client.predict(*args, api_name=f"/{kind}")
            error = ""
        except concurrent.futures.CancelledError:  # gradio_client's own race, see summary()
            error = CANCELLED
        except Exception as e:  # counted, not raised: the benchmark reports errors
            error = f"{type(e).__name__}: {e}"[:200]
        return kind, time.perf_counter() - t0, error

    def _loop(self, i: int, deadline: float, think: float) -> None:
        rng, pos, k = random.Random(i), [0.0] * 6, 0
        while time.monotonic() < deadline:
            start = time.time()
            kind, seconds, error = self.request(self.clients[i], i, k, rng, pos)
            with self._lock:
                self.results.append((kind, start, seconds, error))
            k += 1
            time.sleep(think)

    def run(self, seconds: float, think: float = 0.0) -> None:
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self._loop, args=(i, deadline, think), daemon=True)
                   for i in range(len(self.clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)

    def close(self) -> None:
        for c in self.clients:
            try:
                c.close()
            except Exception:  # closing is best effort
                pass

    def summary(self) -> dict[str, Any]:
        """Per kind: latency of the answered requests, errors (the app's, HTTP, timeouts), and the requests
        gradio_client itself gave up on: when the server ends a session's event stream just as the client
        sends its next request on it, the client cancels that request (the server still answers it)."""
        out: dict[str, Any] = {}
        for kind in KINDS:
            done = [r for r in self.results if r[0] == kind]
            ok = [r[2] for r in done if not r[3]]
            cancelled = sum(r[3] == CANCELLED for r in done)
            out[kind] = {**common.summary_ms(ok), "errors": len(done) - len(ok) - cancelled,
                         "client_cancelled": cancelled,
                         "first_errors": sorted({r[3] for r in done if r[3] and r[3] != CANCELLED})[:3]}
        return out


# ---------------------------------------------------------------- the run


def stop_all(url: str, app: subprocess.Popen, run: Path) -> None:
    """Stop the training job (it outlives the app otherwise), then the app."""
    from gradio_client import Client

    from vae.events import lock_holder

    try:
        Client(url, verbose=False).predict(api_name="/stop_training")
    except Exception:  # the app may be gone: the process is killed below
        pass
    end = time.monotonic() + 60
    while lock_holder(run) is not None and time.monotonic() < end:
        time.sleep(0.5)
    pid = lock_holder(run)
    if pid:
        os.kill(pid, signal.SIGKILL)
    app.send_signal(signal.SIGINT)
    try:
        app.wait(30)
    except subprocess.TimeoutExpired:
        app.kill()


def measure(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from benchmarks.slider_latency import free_port
    from vae.events import lock_holder

    store, n_train = make_store(a.data, tmp / "data" / "stores")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    app = start_app(tmp, port, a.checkpoint)
    run = tmp / "data" / "runs" / "load"
    try:
        progress = "" if a.no_train else start_training(url, store)
        clients = Clients(url, a.clients, a.checkpoint)  # sessions set up while training starts
        log = run / "events.jsonl"
        end = time.monotonic() + 300
        while not a.no_train and '"kind": "step"' not in (log.read_text() if log.is_file() else ""):
            if time.monotonic() > end:
                raise RuntimeError(f"training did not start within 300 s: {progress}")
            time.sleep(0.5)
        t_train = time.time()
        time.sleep(a.settle)
        def readings() -> dict[str, float | None]:
            return {"app": cpu_seconds(app.pid), "training": cpu_seconds(lock_holder(run)),
                    "clients": cpu_seconds()}

        before, t0 = readings(), time.time()
        clients.run(a.duration, a.think)
        t1, after = time.time(), readings()
        clients.close()
        answered = len(clients.results)
        app_cpu = None if before["app"] is None or after["app"] is None else (after["app"] - before["app"])
        return {"requests": clients.summary(), "n_sliders": clients.n_sliders, "train_store_clips": n_train,
                "cores_busy": cpu_shares(before, after, t1 - t0),
                "app_cpu_ms_per_request": None if app_cpu is None else round(1000 * app_cpu / max(1, answered), 1),
                "training": None if a.no_train else {
                    "alone": train_rate(log, n_train, t_train, t0), "under_load": train_rate(log, n_train, t0, t1),
                    "started": "load" in progress}}
    finally:
        stop_all(url, app, run)


def markdown(res: dict[str, Any]) -> str:
    p, r = res["params"], res["requests"]
    rows = [[k, common.fmt(v["median_ms"], 0), common.fmt(v["p95_ms"], 0), v["n"], v["errors"], v["client_cancelled"]]
            for k, v in r.items()]
    text = common.header_md(res, "Responsiveness under load")
    pace = f"{p['think_s']} s between a client's requests" if p["think_s"] else "requests back to back"
    text += (f"{p['clients']} gradio_client sessions for {p['duration_s']:.0f} s against `python app.py` "
             f"(`{p['checkpoint']}`), {'while a job trained' if not p['no_train'] else 'without training'}; "
             f"{pace}, "
             f"a release every {RELEASE_EVERY}, a reconstruction every {RECON_EVERY} requests from every "
             f"{RECON_CLIENT}th client. Cancelled: requests gradio_client gave up on itself (its event stream "
             "closed under it), not answered with an error.\n\n")
    text += common.md_table(["request", "median (ms)", "p95 (ms)", "n", "errors", "cancelled"], rows)
    t = res.get("training")
    if t:
        text += (f"\nTraining (digits store of {res['train_store_clips']} training clips, batch {BATCH}, its own "
                 f"process): {common.fmt(t['alone']['samples_per_s'])} samples/s alone "
                 f"({t['alone']['seconds']} s), {common.fmt(t['under_load']['samples_per_s'])} samples/s under "
                 f"the load ({t['under_load']['seconds']} s).\n")
    cores = res.get("cores_busy") or {}
    if cores.get("app") is not None:
        busy = ", ".join(f"{k} {v:.2f}" for k, v in cores.items() if v is not None)
        text += (f"\nCores kept busy during the load ({res['machine']['cores']} in all): {busy}. The app used "
                 f"{common.fmt(res['app_cpu_ms_per_request'])} ms of CPU per answered request.\n")
    text += (f"\nTarget: {TARGET_P95_MS:.0f} ms slider p95, 0 errors, training going on: "
             f"{'met' if res['meets_target'] else 'not met'}.\n")
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    res = common.begin(NAME, a.quick, clients=a.clients, duration_s=a.duration, settle_s=a.settle, think_s=a.think,
                       checkpoint=os.path.relpath(a.checkpoint, ROOT), no_train=a.no_train)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        res.update(measure(a, Path(tmp)))
    moves = res["requests"]["explore_move"]
    errors = sum(v["errors"] for v in res["requests"].values())
    training = res.get("training")
    res["meets_target"] = bool(a.clients >= 20 and errors == 0 and moves["p95_ms"] <= TARGET_P95_MS
                               and (training is None or training["under_load"]["samples_per_s"] > 0))
    common.finish(res)
    out = Path(a.out) if not a.quick or a.out != str(common.DEFAULT_OUT) else common.DEFAULT_OUT / "tmp" / "quick"
    common.write_result(out, NAME, res, markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
