"""Run ``python -m vae`` under torchrun, recording every checkpoint write with the rank that made it
(one JSON line each in ``$DDP_PROBE_LOG``): tests/test_distributed.py checks that only rank 0 writes, once.
With ``DDP_PROBE_NO_NOISE=1`` the VAE samples no noise (z is the posterior mean), so that one process and
several take exactly the same steps but for the order of floating-point sums."""

from __future__ import annotations

import importlib
import json
import os
import sys

from vae import checkpoint
from vae.cli import main
from vae.model import VAE

real = checkpoint.save_checkpoint


def spy(directory, model, spec, train_cfg, meta, training_state=None, **kw):
    with open(os.environ["DDP_PROBE_LOG"], "a") as f:
        f.write(json.dumps({"rank": int(os.environ.get("RANK", "0")), "dir": str(directory),
                            "epoch": meta.get("epoch"), "step": meta.get("step")}) + "\n")
    return real(directory, model, spec, train_cfg, meta, training_state, **kw)


importlib.import_module("vae.train").save_checkpoint = spy  # the module (vae.train is also a function)
if os.environ.get("DDP_PROBE_RANK0_STOPS_AFTER_EPOCH") and os.environ.get("RANK") == "0":
    # rank 0 alone asks to stop right after its first epoch's end (as a time limit can expire there on one
    # rank only): every rank must still take part in that epoch-end all-reduce, and all stop together
    train_module = importlib.import_module("vae.train")
    real_end, real_should = train_module._end_epoch, train_module._should_stop
    ended: list[int] = []

    def end_epoch(*args, **kw):
        ended.append(1)
        return real_end(*args, **kw)

    train_module._end_epoch = end_epoch
    train_module._should_stop = lambda *a: "time limit reached" if ended else real_should(*a)
if os.environ.get("DDP_PROBE_RANK0_SLOW_STATS") and os.environ.get("RANK") == "0":
    # rank 0 takes its time over the latent statistics at the end (as on a loaded machine, or with a big store)
    import time

    train_module = importlib.import_module("vae.train")
    real_stats = train_module._save_stats

    def slow_stats(*args, **kw):
        time.sleep(float(os.environ["DDP_PROBE_RANK0_SLOW_STATS"]))
        return real_stats(*args, **kw)

    train_module._save_stats = slow_stats
if os.environ.get("DDP_PROBE_NO_NOISE"):
    VAE.reparameterise = staticmethod(lambda mu, logvar: mu)
sys.exit(main(sys.argv[1:]))
