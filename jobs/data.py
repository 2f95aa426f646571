"""Corpora, the train/validation split, packing into rows, and the data position.

Documents. The embedded corpus (the World English Bible, ``corpora/en_web.txt.xz``) has one
document per book (80 books). ``--data PATH`` takes a text file (one document), a folder of
``.txt`` files (one document each, sorted by path) or a ``.jsonl`` file with a ``"text"`` field
(one document per record).

Split, deterministic and documented: document i is validation iff ``i % 10 == 9`` (8 of the 80
books: II Samuel, Proverbs, Joel, Malachi... the list is in ``aunet eval --json``). A corpus of
fewer than 10 documents is split inside each document instead: its last 10%, from the first line
break after that point, is validation.

Packing. A document becomes BOS + bytes + EOS; its levels come from the spec's splitters, once
per document, vectorized (BOS at the top level, EOS at 0). For each epoch the training documents
are shuffled by ``(seed, epoch)`` and concatenated into one stream, cut into consecutive rows of
``context + 1`` positions overlapping by one (inputs and shifted targets). The position of the
next row, ``(epoch, row)``, is all a checkpoint needs to resume exactly. Targets that would
predict a BOS (the start of the next document) are ignored.
"""

from __future__ import annotations

import json
import lzma
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from aunet.core.errors import InputError
from aunet.core.levels import SplitterStack
from aunet.core.tokens import BOS, EOS, IGNORE, PAD

VALIDATION_EVERY = 10  # document i is validation iff i % 10 == 9
EMBEDDED = "en_web"


@attrs.frozen
class Document:
    """One document: a name for humans and its bytes."""

    name: str
    data: bytes


@attrs.frozen
class Corpus:
    """Documents split into training and validation."""

    source: str
    train: tuple[Document, ...]
    validation: tuple[Document, ...]

    @property
    def validation_bytes(self) -> bytes:
        return b"".join(d.data for d in self.validation)


# -- reading -----------------------------------------------------------------------------------


def embedded_documents() -> list[Document]:
    """The World English Bible, one document per book (a book starts at its "Name 1" heading)."""
    from aunet.core.resources import read_corpus

    text = read_corpus(EMBEDDED)
    # Chapter headings are lines "<book> <chapter>"; a book starts at its first chapter.
    starts = [(m.start(), m.group(1).decode()) for m in re.finditer(rb"(?m)^([^\n0-9.,;:!?]+?) 1\n", text)]
    docs = []
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        docs.append(Document(name, text[start:end]))
    assert docs and docs[0].data.startswith(b"Genesis 1\n") and sum(len(d.data) for d in docs) == len(text)
    return docs


def read_documents(path: str | Path) -> list[Document]:
    """Documents of a user corpus; InputError naming the path and the problem."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--data: '{path}' does not exist")
    if p.is_dir():
        files = sorted(q for q in p.rglob("*.txt") if q.is_file())
        if not files:
            raise InputError(f"--data: folder '{path}' holds no .txt files")
        docs = [Document(str(f.relative_to(p)), _read(f)) for f in files]
    elif p.suffix == ".jsonl":
        docs = _read_jsonl(p)
    else:
        docs = [Document(p.name, _read(p))]
    docs = [d for d in docs if d.data]
    if not docs:
        raise InputError(f"--data: '{path}' holds no text (every document is empty)")
    return docs


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except PermissionError:
        raise InputError(f"--data: '{path}' is not readable (permission denied)") from None
    except OSError as exc:
        raise InputError(f"--data: cannot read '{path}': {exc.strerror or exc}") from None
    if path.suffix == ".xz":
        try:
            data = lzma.decompress(data)
        except lzma.LZMAError as exc:
            raise InputError(f"--data: '{path}' is not a valid .xz file: {exc}") from None
    return data


def _read_jsonl(path: Path) -> list[Document]:
    docs = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"--data: {path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f'--data: {path}, line {number}: expected an object with a "text" string')
        docs.append(Document(f"{path.name}:{number}", record["text"].encode("utf-8")))
    return docs


def split(docs: Sequence[Document], source: str) -> Corpus:
    """The deterministic train/validation split (module docstring)."""
    if len(docs) >= VALIDATION_EVERY:
        train = tuple(d for i, d in enumerate(docs) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1)
        validation = tuple(d for i, d in enumerate(docs) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1)
        return Corpus(source, train, validation)
    train, validation = [], []
    for d in docs:
        cut = len(d.data) * 9 // 10
        newline = d.data.find(b"\n", cut)
        cut = newline + 1 if 0 <= newline < len(d.data) - 1 else cut
        train.append(Document(d.name, d.data[:cut]))
        validation.append(Document(d.name + " (last 10%)", d.data[cut:]))
    return Corpus(source, tuple(d for d in train if d.data), tuple(d for d in validation if d.data))


def load_corpus(path: str | Path | None) -> Corpus:
    """The embedded corpus (``path`` None) or a user corpus, split."""
    if path is None:
        return split(embedded_documents(), f"embedded:{EMBEDDED}")
    return split(read_documents(path), str(path))


# -- packing -----------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class Encoded:
    """One document as the model sees it: (N,) int16 tokens and (N,) uint8 levels, N = bytes + 2."""

    tokens: np.ndarray
    levels: np.ndarray


def encode_documents(docs: Sequence[Document], stack: SplitterStack) -> list[Encoded]:
    """BOS + bytes + EOS with their levels, for every document (the splitting is done here, once)."""
    out = []
    for d in docs:
        body = np.frombuffer(d.data, dtype=np.uint8)
        tokens = np.concatenate([[BOS], body.astype(np.int16), [EOS]]).astype(np.int16)
        levels = np.concatenate([[stack.depth], stack.levels(d.data), [0]]).astype(np.uint8)
        out.append(Encoded(tokens, levels))
    return out


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
        """Rows x positions: the bytes a training step reads."""
        return int(self.tokens.size)


class Packer:
    """Rows of ``context`` positions from the training documents, in a reproducible order."""

    def __init__(self, encoded: Sequence[Encoded], context: int, seed: int) -> None:
        self.encoded = list(encoded)
        self.context = context
        self.seed = seed
        self.total = sum(len(e.tokens) for e in self.encoded)
        if self.total < context + 1:
            raise InputError(
                f"the training split has {self.total:,} positions (bytes plus BOS and EOS per document), fewer "
                f"than one row of model.context + 1 = {context + 1:,}; use more data or a smaller context "
                f"(--set model.context=...)"
            )
        self.rows_per_epoch = (self.total - 1) // context
        self._epoch: int | None = None
        self._stream: tuple[np.ndarray, np.ndarray] | None = None

    def _epoch_stream(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.encoded))
            tokens = np.concatenate([self.encoded[i].tokens for i in order])
            levels = np.concatenate([self.encoded[i].levels for i in order])
            self._epoch, self._stream = epoch, (tokens, levels)
        return self._stream

    def batch(self, position: Position, rows: int) -> tuple[Batch, Position]:
        """``rows`` rows starting at ``position``, and the position after them."""
        tokens, levels, targets = [], [], []
        epoch, row = position.epoch, position.row
        for _ in range(rows):
            if row >= self.rows_per_epoch:
                epoch, row = epoch + 1, 0
            stream_tokens, stream_levels = self._epoch_stream(epoch)
            start = row * self.context
            window = stream_tokens[start : start + self.context + 1]
            tokens.append(window[:-1])
            levels.append(stream_levels[start : start + self.context])
            nxt = window[1:].copy()
            nxt[nxt == BOS] = IGNORE  # the start of the next document is not predicted
            targets.append(nxt)
            row += 1
        return Batch(np.stack(tokens), np.stack(levels), np.stack(targets)), Position(epoch, row)


class TrainingData:
    """The trainer's data stream: micro-batches of ``batch_size`` rows in a reproducible order,
    and the position that a checkpoint stores to resume it exactly."""

    def __init__(self, encoded: Sequence[Encoded], *, context: int, batch_size: int, seed: int) -> None:
        self.packer = Packer(encoded, context, seed)
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
        tokens, levels = e.tokens, e.levels
        n = len(tokens) - 1  # predicted positions: every byte and the EOS
        if budget is not None:
            n = min(n, budget)
            budget -= n
        for start in range(0, n, context):
            end = min(start + context, n)
            width = end - start
            row_tokens = np.full(context, PAD, dtype=np.int16)
            row_levels = np.zeros(context, dtype=np.uint8)
            row_targets = np.full(context, IGNORE, dtype=np.int16)
            row_tokens[:width] = tokens[start:end]
            row_levels[:width] = levels[start:end]
            row_targets[:width] = tokens[start + 1 : end + 1]
            yield Batch(row_tokens[None], row_levels[None], row_targets[None])
        if budget is not None and budget <= 0:
            return


def xz_bits_per_byte(data: bytes) -> float:
    """Bits per byte of ``xz -9e`` (LZMA2, preset 9 extreme) on ``data``, container included."""
    if not data:
        return float("nan")
    return 8.0 * len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)) / len(data)
