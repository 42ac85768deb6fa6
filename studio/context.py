"""What every tab shares: the workspace, the training jobs, the model picked at start-up."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from vae.checkpoint import Checkpoint
from vae.latents import LatentStats, LatentStatsError, prior_stats

from .jobs import TrainingJobs
from .uploads import DEFAULT_LIMITS, UploadLimits
from .wording import NO_STATS, damaged_stats
from .workspace import Workspace

log = logging.getLogger("sound-vae-app")


class Studio:
    """The state behind the page: one :class:`Workspace` and one training-job manager."""

    def __init__(self, workspace: Workspace, jobs: TrainingJobs | None = None, checkpoint: str | None = None,
                 allowed_dirs: Sequence[Path] | None = None, upload_limits: UploadLimits = DEFAULT_LIMITS):
        self.ws = workspace
        self.jobs = jobs or TrainingJobs()
        # the server folders the Dataset tab may read (None: any; app.py always gives them), and upload bounds
        self.allowed_dirs = None if allowed_dirs is None else [Path(d) for d in allowed_dirs]
        self.upload_limits = upload_limits
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
        try:
            stats = self.ws.latent_stats(ckpt)
        except LatentStatsError as e:  # still explorable: along the prior's axes, saying why
            return ck, prior_stats(ck.model_cfg.latent_shape), damaged_stats(str(e))
        if stats is None:
            return ck, prior_stats(ck.model_cfg.latent_shape), NO_STATS
        return ck, stats, ""
