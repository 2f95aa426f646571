"""Packing documents into rows: the training stream, its position, and the evaluation windows.

A document becomes BOS + bytes + EOS; its levels come from the spec's splitters, once per
document, vectorized (BOS at the top level, EOS at 0): ``encode_documents``. For each epoch the
training documents are shuffled by ``(seed, epoch)`` and concatenated into one stream (``Packed``:
read in place, never copied together), cut into consecutive rows of ``context + 1`` positions
overlapping by one (inputs and shifted targets): ``Packer``. The position of the next row,
``(epoch, row)`` (``Position``), is all a checkpoint needs to resume exactly (``TrainingData``).
Targets that would predict a BOS (the start of the next document) are ignored. Evaluation reads
each document in windows of its own (``evaluation_rows``).

The documents come from ``aunet.jobs.data.corpus`` (read whole) or ``aunet.jobs.data.streaming``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from aunet.core.encoding import Encoded, Encoding
from aunet.core.errors import InputError
from aunet.core.tokens import BOS, IGNORE, PAD

if TYPE_CHECKING:
    from aunet.jobs.data.corpus import Document


def encode_documents(docs: Sequence[Document], encoding: Encoding) -> list[Encoded]:
    """Every document as ``encoding`` reads it (the splitting is done here, once)."""
    return [encoding.encode(d.data) for d in docs]


@attrs.frozen
class Position:
    """Where the next row starts: the epoch and the row index within it."""

    epoch: int = 0
    row: int = 0


@attrs.frozen(eq=False)
class Batch:
    """(B, T) inputs, levels and targets, on the host."""

    tokens: np.ndarray
    levels: np.ndarray
    targets: np.ndarray
    covered: int | None = None  # bytes the rows' tokens stand for, when a token is not a byte

    def tensors(self, device: Any = "cpu") -> tuple[Any, Any, Any]:
        """(tokens, levels, targets) as int64, uint8, int64 tensors on ``device``. To CUDA they go
        through pinned memory without blocking, so the copy overlaps the previous step."""
        import torch

        device = torch.device(device)
        arrays = (self.tokens.astype(np.int64), self.levels, self.targets.astype(np.int64))
        if device.type != "cuda":
            return tuple(torch.from_numpy(a).to(device) for a in arrays)
        return tuple(torch.from_numpy(a).pin_memory().to(device, non_blocking=True) for a in arrays)

    def capacity(self, depth: int) -> list[int]:
        """Segments per row at levels 1..L that keep every boundary (eager shapes), computed on the
        host so that the model needs no synchronisation to size its levels. Like the model, counts
        every BOS and each row's first position at the top level."""
        levels = np.where(self.tokens == BOS, depth, self.levels).astype(np.int64)
        levels[:, 0] = depth
        return [int((levels > i).sum(1).max()) for i in range(depth)]

    @property
    def several_documents(self) -> bool:
        """Whether some row holds more than one document (a BOS after its first position): only
        then does attention need a document mask (decided on the host, without a sync)."""
        return bool((self.tokens[:, 1:] == BOS).any())

    @property
    def n_bytes(self) -> int:
        """The bytes a training step reads: rows x positions, or what the tokens cover."""
        return int(self.tokens.size) if self.covered is None else self.covered

    @property
    def rows_count(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def predicted(self) -> int:
        """Positions with a target (counted on the host)."""
        return int((self.targets != IGNORE).sum())

    def rows(self, which: slice) -> Batch:
        """Some of the rows (a process's share of a micro-batch)."""
        return Batch(self.tokens[which], self.levels[which], self.targets[which])


class Packed:
    """Documents laid end to end in a given order (a stream of positions), read by position
    without ever copying them together: a row is gathered from the documents it spans."""

    def __init__(self, encoded: Sequence[Encoded], order: Sequence[int]) -> None:
        self.encoded = encoded
        self.order = order
        lengths = np.fromiter((len(encoded[i]) for i in order), dtype=np.int64, count=len(order))
        self.starts = np.concatenate([[0], np.cumsum(lengths)])  # (D + 1,) where each document starts
        self.total = int(self.starts[-1])
        self.dtype = encoded[order[0]].dtype if len(order) else np.int16

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(count,) tokens and levels of positions ``start:start + count`` (fewer at the end)."""
        count = max(0, min(count, self.total - start))
        tokens = np.empty(count, dtype=self.dtype)
        levels = np.empty(count, dtype=np.uint8)
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        done = 0
        while done < count:
            e = self.encoded[self.order[k]]
            a = start + done - int(self.starts[k])
            b = min(len(e), a + count - done)
            e.write(a, b, tokens[done : done + b - a], levels[done : done + b - a])
            done += b - a
            k += 1
        return tokens, levels


class Packer:
    """Rows of ``context`` positions from the training documents, in a reproducible order."""

    def __init__(self, encoded: Sequence[Encoded], context: int, seed: int, encoding: Encoding | None = None) -> None:
        self.encoded = list(encoded)
        self.encoding = encoding
        self.context = context
        self.seed = seed
        self.total = sum(len(e) for e in self.encoded)
        if self.total < context + 1:
            raise InputError(
                f"the training split has {self.total:,} positions (bytes plus BOS and EOS per document), fewer "
                f"than one row of model.context + 1 = {context + 1:,}; use more data or a smaller context "
                f"(--set model.context=...)"
            )
        self.rows_per_epoch = (self.total - 1) // context
        self._epoch: int | None = None
        self._stream: Packed | None = None

    def _epoch_stream(self, epoch: int) -> Packed:
        if self._epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.encoded))
            self._epoch, self._stream = epoch, Packed(self.encoded, order)
        return self._stream

    def batch(self, position: Position, rows: int) -> tuple[Batch, Position]:
        """``rows`` rows starting at ``position``, and the position after them."""
        tokens, levels, targets = [], [], []
        epoch, row = position.epoch, position.row
        for _ in range(rows):
            if row >= self.rows_per_epoch:
                epoch, row = epoch + 1, 0
            window, window_levels = self._epoch_stream(epoch).read(row * self.context, self.context + 1)
            tokens.append(window[:-1])
            levels.append(window_levels[:-1])
            nxt = window[1:].copy()
            nxt[nxt == BOS] = IGNORE  # the start of the next document is not predicted
            targets.append(nxt)
            row += 1
        tokens = np.stack(tokens)
        covered = self.encoding.covered(tokens) if self.encoding is not None else None
        return Batch(tokens, np.stack(levels), np.stack(targets), covered), Position(epoch, row)


class TrainingData:
    """The trainer's data stream: micro-batches of ``batch_size`` rows in a reproducible order,
    and the position that a checkpoint stores to resume it exactly."""

    def __init__(
        self,
        encoded: Sequence[Encoded],
        *,
        context: int,
        batch_size: int,
        seed: int,
        encoding: Encoding | None = None,
    ) -> None:
        self.packer = Packer(encoded, context, seed, encoding)
        self.batch_size = batch_size
        self.position = Position()

    def next(self) -> Batch:
        batch, self.position = self.packer.batch(self.position, self.batch_size)
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.position.epoch, "row": self.position.row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = Position(int(state["epoch"]), int(state["row"]))


def evaluation_rows(encoded: Sequence[Encoded], context: int, limit_bytes: int | None = None) -> Iterator[Batch]:
    """Each validation document cut into consecutive windows of ``context`` positions, one row
    each, padded with PAD (and IGNORE targets); every byte and EOS is predicted exactly once, with
    the context of its own window (attention never crosses documents)."""
    budget = limit_bytes
    for e in encoded:
        n = len(e) - 1  # predicted positions: every byte and the EOS
        if budget is not None:
            n = min(n, budget)
            budget -= n
        dtype = e.dtype
        for start in range(0, n, context):
            end = min(start + context, n)
            width = end - start
            window = np.empty(width + 1, dtype=dtype)
            row_tokens = np.full(context, PAD, dtype=dtype)
            row_levels = np.zeros(context, dtype=np.uint8)
            row_targets = np.full(context, IGNORE, dtype=dtype)
            e.write(start, end + 1, window, None)
            e.write(start, end, row_tokens, row_levels)
            row_targets[:width] = window[1:]
            yield Batch(row_tokens[None], row_levels[None], row_targets[None])
        if budget is not None and budget <= 0:
            return
