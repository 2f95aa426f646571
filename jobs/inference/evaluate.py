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
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from aunet.core.encoding import Encoded, Encoding
from aunet.core.tokens import IGNORE
from aunet.jobs.data.packing import Batch, evaluation_rows


@attrs.frozen
class EvalResult:
    """Figures of one evaluation."""

    bpb: float
    bytes: int  # bytes predicted
    nll_bits: float  # total, bytes and EOS
    bytes_per_segment: tuple[float, ...]  # per level 1..L
    dropped: int  # always 0 with eager shapes; reported to show it

    def to_json(self) -> dict:
        return {
            "bpb": self.bpb,
            "bytes": self.bytes,
            "nll_bits": self.nll_bits,
            "bytes_per_segment": list(self.bytes_per_segment),
            "dropped": self.dropped,
        }


def _batches(rows: Iterable[Batch], size: int) -> Iterator[Batch]:
    """Rows joined ``size`` at a time, lazily (a streamed validation split is never held whole)."""
    chunk: list[Batch] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield _join(chunk)
            chunk = []
    if chunk:
        yield _join(chunk)


def _join(rows: list[Batch]) -> Batch:
    return Batch(
        np.concatenate([r.tokens for r in rows]),
        np.concatenate([r.levels for r in rows]),
        np.concatenate([r.targets for r in rows]),
    )


def _row_count(encoded: Iterable[Encoded], context: int, limit_bytes: int | None) -> int | None:
    """Rows an evaluation will take, when the documents are a sequence (None for a stream)."""
    if not isinstance(encoded, Sequence):
        return None
    rows, budget = 0, limit_bytes
    for e in encoded:
        n = len(e) - 1
        if budget is not None:
            n = min(n, budget)
            budget -= n
        rows += -(-n // context)
        if budget is not None and budget <= 0:
            break
    return rows


def evaluate(
    model,
    encoding: Encoding,
    encoded: Iterable[Encoded],
    *,
    context: int,
    batch_size: int = 8,
    limit_bytes: int | None = None,
    autocast: Any = None,
    progress: Any = None,
) -> EvalResult:
    """Bits per byte of ``model`` on the validation documents that ``encoding`` encoded (a list,
    or any iterable: a stream is read lazily), on the model's device.

    Each row holds one document's window, so attention needs no document mask, and the levels'
    sizes (every boundary kept) are computed on the host; the totals stay on the device until the
    end: one read-back per evaluation.
    """
    import contextlib

    import torch

    device = next(model.parameters()).device
    total_rows = _row_count(encoded, context, limit_bytes)
    total = -(-total_rows // batch_size) if total_rows is not None else None
    nats = torch.zeros((), dtype=torch.float64, device=device)
    segments = torch.zeros(model.depth, dtype=torch.long, device=device)
    dropped = torch.zeros((), dtype=torch.long, device=device)
    n_bytes = positions = 0
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        with torch.no_grad(), autocast or contextlib.nullcontext():
            for done, batch in enumerate(_batches(evaluation_rows(encoded, context, limit_bytes), batch_size), start=1):
                n_bytes += encoding.target_bytes(batch.targets)
                positions += int((batch.targets != IGNORE).sum())
                tokens, levels, targets = batch.tensors(device)
                out = model(tokens, levels, targets, capacity=batch.capacity(model.depth), doc_mask=False)
                nats += out.loss.double() * out.n_predicted
                segments += out.segments
                dropped += out.dropped.sum()
                if progress is not None and progress.live:
                    progress.bar("evaluating", done, total, n_bytes, time.perf_counter() - started)
    finally:
        if progress is not None and progress.live:
            progress.clear()
        model.train(was_training)
    bits = float(nats) / math.log(2)
    per_segment = tuple(positions / s if s else float("nan") for s in segments.tolist())
    return EvalResult(bits / n_bytes if n_bytes else float("nan"), n_bytes, bits, per_segment, int(dropped))
