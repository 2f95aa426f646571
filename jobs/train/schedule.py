"""The learning-rate schedule (linear warmup, then cosine to ``min_lr_ratio`` of the peak) and the
budget that says how far along it a run is. The trainer follows it; the resume rules
(``aunet.jobs.train.resume``) read it to refuse a budget change that would make the rate jump."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from aunet.jobs.config import TrainSpec

if TYPE_CHECKING:
    from aunet.jobs.train.trainer import Trainer


def schedule(config: TrainSpec, step: int, fraction: float) -> float:
    """Learning rate at optimizer step ``step`` (0-based), ``fraction`` of the decay done (at 1
    and after: the final rate): linear warmup, then cosine from the peak to ``min_lr_ratio`` of it."""
    warm = min(1.0, (step + 1) / config.warmup) if config.warmup else 1.0
    fraction = min(max(fraction, 0.0), 1.0)
    cosine = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * fraction))
    return config.lr * warm * cosine


class TrainingBudget:
    """When the run is done: a number of optimizer steps, or minutes of training (then the
    schedule follows elapsed time, and runs are not bit-reproducible)."""

    def __init__(self, config: TrainSpec) -> None:
        self.steps = config.steps
        self.decay_steps = config.decay_steps or config.steps
        self.seconds = None if config.steps is not None else config.minutes * 60.0

    def fraction(self, trainer: Trainer) -> float:
        """How much of the learning-rate decay is done (1 and beyond: the final rate)."""
        if self.steps is not None:
            return trainer.step_count / self.decay_steps
        return trainer.elapsed / self.seconds

    def done(self, trainer: Trainer) -> bool:
        if self.steps is not None:
            return trainer.step_count >= self.steps
        return trainer.elapsed >= self.seconds

    def eta(self, trainer: Trainer, seconds_per_step: float) -> float:
        if self.steps is not None:
            return (self.steps - trainer.step_count) * seconds_per_step
        return max(0.0, self.seconds - trainer.elapsed)
