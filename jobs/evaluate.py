"""Validation bits per byte (docs/method.md section 5).

Each validation document is cut into windows of ``model.context`` positions (``evaluation_rows``);
attention stays inside the window's document. Bits per byte is the total negative log-likelihood
in bits of every predicted token (each byte, and each document's EOS) divided by the number of
bytes: the cost of encoding the validation text, comparable with a compressor's output size.
Document starts (BOS) are never predicted. Shapes are eager: no boundary is dropped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from aunet.core.tokens import IGNORE
from aunet.jobs.data import Batch, Encoded, evaluation_rows


@attrs.frozen
class EvalResult:
    """Figures of one evaluation."""

    bpb: float
    bytes: int  # bytes predicted
    nll_bits: float  # total, bytes and EOS
    bytes_per_segment: tuple[float, ...]  # per level 1..L
    dropped: int  # always 0 with eager shapes; reported to show it

    def to_json(self) -> dict:
        return {"bpb": self.bpb, "bytes": self.bytes, "nll_bits": self.nll_bits,
                "bytes_per_segment": list(self.bytes_per_segment), "dropped": self.dropped}  # fmt: skip


def _batches(rows: list[Batch], size: int) -> list[Batch]:
    return [
        Batch(np.concatenate([r.tokens for r in rows[i : i + size]]),
              np.concatenate([r.levels for r in rows[i : i + size]]),
              np.concatenate([r.targets for r in rows[i : i + size]]))  # fmt: skip
        for i in range(0, len(rows), size)
    ]


def evaluate(model, encoded: Sequence[Encoded], *, context: int, batch_size: int = 8,
             limit_bytes: int | None = None, autocast: Any = None, progress: Any = None) -> EvalResult:  # fmt: skip
    """Bits per byte of ``model`` on the encoded validation documents, on the model's device.

    Each row holds one document's window, so attention needs no document mask, and the levels'
    sizes (every boundary kept) are computed on the host; the totals stay on the device until the
    end: one read-back per evaluation.
    """
    import contextlib

    import torch

    device = next(model.parameters()).device
    rows = list(evaluation_rows(encoded, context, limit_bytes))
    nats = torch.zeros((), dtype=torch.float64, device=device)
    segments = torch.zeros(model.depth, dtype=torch.long, device=device)
    dropped = torch.zeros((), dtype=torch.long, device=device)
    n_bytes = positions = 0
    was_training = model.training
    model.eval()
    batches = _batches(rows, batch_size)
    started = time.perf_counter()
    try:
        with torch.no_grad(), autocast or contextlib.nullcontext():
            for done, batch in enumerate(batches, start=1):
                n_bytes += int(((batch.targets >= 0) & (batch.targets < 256)).sum())
                positions += int((batch.targets != IGNORE).sum())
                tokens, levels, targets = batch.tensors(device)
                out = model(tokens, levels, targets, capacity=batch.capacity(model.depth), doc_mask=False)
                nats += out.loss.double() * out.n_predicted
                segments += out.segments
                dropped += out.dropped.sum()
                if progress is not None and progress.live:
                    seconds = time.perf_counter() - started
                    progress.bar("evaluating", done, len(batches), n_bytes, seconds)
    finally:
        if progress is not None and progress.live:
            progress.clear()
        model.train(was_training)
    bits = float(nats) / math.log(2)
    per_segment = tuple(positions / s if s else float("nan") for s in segments.tolist())
    return EvalResult(bits / n_bytes if n_bytes else float("nan"), n_bytes, bits, per_segment, int(dropped))
