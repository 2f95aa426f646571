"""The training loop's evaluator (``[train.eval]``: validation bits per byte every ``every``
steps, and on the whole split at the end) and sampler (``[train.sample]``: a continuation of a
fixed prompt printed at the end of a run)."""

from __future__ import annotations

import math
from typing import Any

from aunet.core.encoding import Encoding
from aunet.jobs.config import EvalSpec, SampleSpec
from aunet.jobs.train.metrics import MetricWriters, Progress
from aunet.jobs.train.trainer import Trainer


class Evaluator:
    """Validation bits per byte: on ``bytes`` of the split every ``every`` steps, on all of it
    at the end."""

    def __init__(
        self,
        text: Any,
        encoding: Encoding,
        config: EvalSpec,
        *,
        context: int,
        batch_size: int,
    ) -> None:
        self.text = text
        self.encoding = encoding
        self.config = config
        self.context = context
        self.batch_size = config.batch_size or batch_size

    def maybe(self, trainer: Trainer, writers: MetricWriters, progress: Progress, *, final: bool) -> None:
        step = trainer.step_count
        if step % self.config.every or final:
            return
        result = self.run(trainer, limit_bytes=self.config.bytes)
        writers.write({"step": step, "val_bpb": result.bpb, "val_bytes": result.bytes})
        writers.scalars(step, {"val/bpb": result.bpb})
        progress.message(
            f"step {step}: validation {result.bpb:.4f} bits per byte on the first {result.bytes:,} bytes "
            "of the validation split (the whole split at the end)"
        )

    def run(self, trainer: Trainer, limit_bytes: int | None = None, progress: Progress | None = None) -> Any:
        from aunet.jobs.inference.evaluate import evaluate

        # Every process evaluates the same rows (a sharded model needs all of them in each forward).
        if limit_bytes is not None:  # budgets are in bytes, rows in positions
            limit_bytes = math.ceil(limit_bytes / self.encoding.bytes_per_position)
        return evaluate(
            trainer.model,
            self.encoding,
            self.text.validation(self.encoding, limit_bytes),
            context=self.context,
            batch_size=self.batch_size,
            limit_bytes=limit_bytes,
            autocast=trainer.autocast(),
            progress=progress,
        )


class Sampler:
    """The continuation of a fixed prompt printed at the end of a run."""

    def __init__(self, config: SampleSpec, seed: int) -> None:
        self.config = config
        self.seed = seed

    def sample(self, model: Any, encoding: Encoding) -> bytes | None:
        from aunet.jobs.inference.generate import generate
        from aunet.jobs.runtime.devices import default_decode_threads

        if not self.config.bytes:
            return None
        device = next(model.parameters()).device
        # Decoding calls the model's parts directly: a sharded root gathers its own parameters first.
        sharded = hasattr(model, "unshard")
        if sharded:
            model.unshard()
        try:
            return generate(
                model,
                [self.config.prompt.encode()],
                self.config.bytes,
                encoding=encoding,
                temperature=self.config.temperature,
                top_k=self.config.top_k,
                seed=self.seed,
                threads=default_decode_threads(1, device),
            )[0]
        finally:
            if sharded:
                model.reshard()
