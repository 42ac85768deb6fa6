"""What every tab shares: the workspace, the training jobs, the model picked at start-up."""

from __future__ import annotations

import logging
from pathlib import Path

from vae.checkpoint import Checkpoint
from vae.latents import LatentStats, prior_stats

from .jobs import TrainingJobs
from .wording import NO_STATS
from .workspace import Workspace

log = logging.getLogger("sound-vae-app")


class Studio:
    """The state behind the page: one :class:`Workspace` and one training-job manager."""

    def __init__(self, workspace: Workspace, jobs: TrainingJobs | None = None, checkpoint: str | None = None):
        self.ws = workspace
        self.jobs = jobs or TrainingJobs()
        if checkpoint and not Path(checkpoint, "config.json").is_file():
            log.warning("--checkpoint %s is not a checkpoint folder; ignoring it", checkpoint)
            checkpoint = None
        self.initial_checkpoint = checkpoint or self.ws.default_checkpoint()

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        found = self.ws.checkpoints()
        if self.initial_checkpoint and self.initial_checkpoint not in [p for _, p in found]:
            found.insert(0, (f"{self.initial_checkpoint} (given)", self.initial_checkpoint))
        return found

    def map_sources(self) -> list[tuple[str, str]]:
        return [("codes saved with the model", "")] + [(f"store: {n}", p) for n, p in self.ws.stores()]

    def notes(self) -> str:
        missing = self.ws.missing(has_model=bool(self.initial_checkpoint))
        return "\n\n".join(f"ℹ️ {m}" for m in missing)

    def model(self, ckpt: str | None) -> tuple[Checkpoint, LatentStats, str]:
        """The checkpoint, its latent statistics (the prior's axes when it has none) and a note."""
        ck = self.ws.load(ckpt)
        stats = self.ws.latent_stats(ckpt)
        if stats is None:
            return ck, prior_stats(ck.model_cfg.latent_shape), NO_STATS
        return ck, stats, ""
