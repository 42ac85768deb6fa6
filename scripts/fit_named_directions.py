"""Fit the named directions (louder, brighter, higher, noisier, longer) of checkpoints and print their figures.

    python scripts/fit_named_directions.py checkpoints/digits checkpoints/music

Each checkpoint's ``latents.safetensors`` gets them, fitted on the codes already saved there (no dataset
needed; see vae.named_directions); ``--store`` recomputes all the latent statistics from a store's training
clips instead, ``--dry-run`` only prints. The table is the one in the README and the model cards.
"""

from __future__ import annotations

import argparse

import torch

from preprocessing.store import Store
from vae.checkpoint import load_checkpoint
from vae.generate import display_range
from vae.latents import load_latent_stats
from vae.named_directions import figures_table, fit_named_directions, model_decoder, update_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--store", help="recompute all latent statistics from this store's training clips (one checkpoint)")
    p.add_argument("--dry-run", action="store_true", help="fit and print, write nothing")
    a = p.parse_args()
    torch.set_num_threads(1)
    for d in a.checkpoints:
        if a.dry_run:
            ck = load_checkpoint(d)
            nd = fit_named_directions(model_decoder(ck.model, display_range(ck)), load_latent_stats(d).codes,
                                      ck.spec.sample_rate)
        else:
            nd = update_checkpoint(d, Store(a.store) if a.store else None)
        print(f"\n{d}\n")
        print(figures_table(nd) if nd is not None else "too few codes: no named directions")


if __name__ == "__main__":
    main()
