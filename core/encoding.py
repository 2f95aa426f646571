"""What a model reads: one contract (``Encoding``), one implementation per kind of input.

A document becomes BOS, its ids, then EOS, with one level per position (``Encoded``); a prompt
becomes the last ids that fit the context and a stream that turns each new id into bytes and a
level (``Prompt``); a context and its continuation become one row whose continuation positions
are known (``Pair``). Every job (training, streaming, evaluation, generation, compare, the
Hugging Face bridge, the harness) takes an ``Encoding`` and never asks what kind of model it holds.

Two kinds exist:

- ``SplitterEncoding``: bytes, each at the level its splitter stack gives it (every AU-Net; a flat
  byte model is a stack of no splitters). Here, in core.
- ``BpeEncoding``: the BPE baseline's tokens, every one at level 0 (``aunet.jobs.data.bpe``,
  since its tokenizer is trained by a job).

A kind whose boundaries the model chooses itself (a learned router) is an ``Encoding`` whose
levels are all 0 but BOS's: the model computes the rest.
"""

from __future__ import annotations

import abc
from typing import Any

import attrs
import numpy as np

from aunet.core.errors import InputError
from aunet.core.levels import LevelStream, SplitterStack
from aunet.core.tokens import BOS, EOS, VOCAB_SIZE

#: Documents up to this size are split in one vectorized call (33 to 51 MB/s on a laptop core,
#: about 10 to 54 bytes of memory per byte for a moment); longer ones go through the stack's
#: streaming machine in chunks of ``LEVEL_CHUNK_BYTES`` (12 MB/s; the same levels, a splitter's
#: two forms agree), so the memory splitting takes stays under 60 MB whatever a document's size.
LEVEL_BATCH_BYTES = 1 << 20
LEVEL_CHUNK_BYTES = 256 << 10


def _token_dtype(body: np.ndarray) -> Any:
    return np.int16 if body.dtype == np.uint8 else np.int32


@attrs.frozen(eq=False)
class Encoded:
    """One document as the model reads it: BOS, ``body`` (its bytes, uint8, a view of the
    document's own bytes: no copy; or a BPE model's ids), then EOS unless ``eos`` is off.
    ``levels`` (uint8) has one level per position, BOS and EOS included."""

    body: np.ndarray
    levels: np.ndarray
    eos: bool = True

    def __len__(self) -> int:
        return len(self.body) + 1 + self.eos

    @property
    def dtype(self) -> Any:
        """The narrowest integer type that holds its ids (BOS and EOS included)."""
        return _token_dtype(self.body)

    @property
    def tokens(self) -> np.ndarray:
        """(N,) token ids, BOS first (a new array; ``write`` copies a range without it)."""
        out = np.empty(len(self), dtype=self.dtype)
        self.write(0, len(self), out)
        return out

    def write(self, start: int, stop: int, tokens: np.ndarray, levels: np.ndarray | None = None) -> None:
        """Positions ``start:stop`` of the document into ``tokens`` (and ``levels``)."""
        n = len(self.body)
        if levels is not None:
            levels[: stop - start] = self.levels[start:stop]
        i, j = start, 0
        if i == 0 and stop > 0:
            tokens[0] = BOS
            i, j = 1, 1
        hi = min(stop, n + 1)
        if hi > i:
            tokens[j : j + hi - i] = self.body[i - 1 : hi - 1]
            j += hi - i
            i = hi
        if i < stop:  # the EOS
            tokens[j] = EOS


@attrs.frozen
class Piece:
    """What one new id stands for while decoding: its bytes and the level it takes."""

    data: bytes
    level: int


class IdStream(abc.ABC):
    """A row's reading position while decoding: each chosen id pushed in turn."""

    @abc.abstractmethod
    def push(self, token: int) -> Piece:
        """The bytes and level of ``token``, appended after everything pushed so far."""


@attrs.frozen(eq=False)
class Prompt:
    """A prompt as a row's start: its ids and levels (no BOS), the bytes cut from its left to fit
    the context, and the stream that continues it."""

    ids: np.ndarray  # (N,) int64
    levels: np.ndarray  # (N,) uint8
    dropped: int
    stream: IdStream


@attrs.frozen(eq=False)
class Pair:
    """A context and its continuation as one row (``Encoded``, no EOS): the continuation is its
    last ``scored`` positions. ``dropped`` bytes were cut from the left to fit; the continuation
    alone lost ``continuation_dropped`` of them."""

    encoded: Encoded
    scored: int
    dropped: int
    continuation_dropped: int


class Encoding(abc.ABC):
    """What a model reads (the module docstring): bytes or tokens to ids and levels and back."""

    #: A short name for messages and cache keys: ``bytes`` or ``bpe``.
    name: str
    #: What one position holds, for messages: ``bytes`` or ``tokens``.
    unit: str
    #: L, the top level a position can take (0 for an encoding without levels).
    depth: int
    #: Ids 0..id_count-1 are this encoding's vocabulary (BOS, EOS and PAD included); a model's
    #: larger ids are never chosen while decoding.
    id_count: int
    #: Bytes per position, on average: 1 for bytes, the measured figure for tokens. FLOPs per
    #: byte and bits per byte divide by it.
    bytes_per_position: float

    @abc.abstractmethod
    def encode(self, data: bytes, *, eos: bool = True) -> Encoded:
        """BOS + ``data``'s ids (+ EOS), with one level per position: BOS at the top, EOS at 0."""

    @abc.abstractmethod
    def covered(self, ids: np.ndarray) -> int:
        """The bytes that a batch of input ids reads (what bytes per second counts)."""

    @abc.abstractmethod
    def target_bytes(self, targets: np.ndarray) -> int:
        """The bytes that the predicted targets stand for (what bits per byte divides by);
        ``IGNORE`` targets count nothing."""

    @abc.abstractmethod
    def prompt(self, data: bytes, limit: int) -> Prompt:
        """``data`` as a row's start of at most ``limit`` positions after BOS (its last ones)."""

    @abc.abstractmethod
    def pair(self, context: bytes, continuation: bytes, limit: int) -> Pair:
        """``context`` then ``continuation`` as one row of at most ``limit`` positions after BOS,
        cut from the left; the continuation kept whole when it fits, else its last positions."""

    def saved(self) -> dict[str, Any] | None:
        """What a checkpoint keeps to read the same way again, beyond its spec (JSON: a trained
        tokenizer); None when the spec says it all."""
        return None


class _SplitterStream(IdStream):
    def __init__(self, stream: LevelStream) -> None:
        self.stream = stream

    def push(self, token: int) -> Piece:
        return Piece(bytes((token,)), self.stream.push(token))


@attrs.frozen
class SplitterEncoding(Encoding):
    """Bytes, each at the level its splitter stack gives it (every byte model, AU-Net or flat)."""

    stack: SplitterStack

    name = "bytes"
    unit = "bytes"
    bytes_per_position = 1.0

    @property
    def depth(self) -> int:  # type: ignore[override]
        return self.stack.depth

    @property
    def id_count(self) -> int:  # type: ignore[override]
        return VOCAB_SIZE

    def levels_into(self, data: bytes, out: np.ndarray) -> None:
        """The (len(data),) levels of ``data`` into ``out``, in bounded memory (``LEVEL_BATCH_BYTES``)."""
        if len(data) <= LEVEL_BATCH_BYTES:
            out[:] = self.stack.levels(data)
            return
        stream = self.stack.stream()
        for i in range(0, len(data), LEVEL_CHUNK_BYTES):
            out[i : i + LEVEL_CHUNK_BYTES] = stream.feed(data[i : i + LEVEL_CHUNK_BYTES])

    def encode(self, data: bytes, *, eos: bool = True) -> Encoded:
        body = np.frombuffer(data, dtype=np.uint8)  # (N,) a view of the document's bytes
        levels = np.empty(len(body) + 1 + eos, dtype=np.uint8)  # (N + 2,)
        levels[0] = self.stack.depth
        self.levels_into(data, levels[1 : len(body) + 1])
        if eos:
            levels[-1] = 0
        return Encoded(body, levels, eos)

    def covered(self, ids: np.ndarray) -> int:
        return int(ids.size)  # every position reads one byte (BOS and EOS stand for one each)

    def target_bytes(self, targets: np.ndarray) -> int:
        return int(((targets >= 0) & (targets < 256)).sum())

    def prompt(self, data: bytes, limit: int) -> Prompt:
        kept = data[len(data) - limit :] if len(data) > limit else data
        stream = self.stack.stream()
        levels = stream.feed(kept).copy() if kept else np.zeros(0, dtype=np.uint8)
        ids = np.frombuffer(kept, dtype=np.uint8).astype(np.int64)
        return Prompt(ids, levels, len(data) - len(kept), _SplitterStream(stream))

    def pair(self, context: bytes, continuation: bytes, limit: int) -> Pair:
        data = context + continuation
        kept = data[len(data) - limit :] if len(data) > limit else data
        scored = min(len(continuation), limit)
        # Levels over the kept bytes as one string (the splitters are prefix-stable).
        return Pair(self.encode(kept, eos=False), scored, len(data) - len(kept), max(0, len(continuation) - limit))


def splitter_encoding(spec: Any) -> SplitterEncoding:
    """How a byte model of ``spec`` reads (its levels' splitters). A BPE model reads through the
    tokenizer its run trained: ``aunet.load_run(DIR).encoding``."""
    if spec.model.bpe:
        raise InputError(
            f"spec {spec.name!r} is a BPE baseline, which reads through the tokenizer its run trained; "
            "use the run's encoding (aunet.load_run(DIR).encoding)"
        )
    return SplitterEncoding(spec.splitter_stack())


__all__ = [
    "LEVEL_BATCH_BYTES",
    "LEVEL_CHUNK_BYTES",
    "Encoded",
    "Encoding",
    "IdStream",
    "Pair",
    "Piece",
    "Prompt",
    "SplitterEncoding",
    "splitter_encoding",
]
