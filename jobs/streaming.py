"""Streaming corpora: folders (or single files) of text read lazily, with bounded memory.

A streamed corpus is a folder of ``.txt`` (one document each), ``.jsonl`` (one document per line,
a ``"text"`` field; also compressed: ``.jsonl.gz``, ``.jsonl.xz``, ``.jsonl.bz2``, ``.jsonl.zst``)
and ``.parquet`` files (a ``text`` column; ``pip install aunet[parquet]``), read in file order,
or one such record file. Documents are numbered in that order; document i is validation iff
``i % 10 == 9``, as for corpora held in memory.

Training reads the stream in **windows**: documents are read (and split into levels, once each)
until the window holds ``buffer_bytes`` bytes, the window is shuffled by ``(seed, epoch,
window)``, and rows of ``context + 1`` positions are cut from the shuffled documents, a row
continuing into the next window where one ends. Memory is one window (its bytes as tokens and
levels: three bytes per byte) and a file reader, whatever the corpus size. The position in the
stream (epoch, window, the file and record where the window starts, and the offset in the
window) is part of every checkpoint: a resume reads the same window again and continues exactly.

Evaluation reads the validation documents lazily too, up to its byte budget.

Every rank of a distributed run reads the same stream (each keeps its rows of every micro-batch):
splitting runs at 20 to 80 MB/s per process, far above what a training process consumes, so no
worker processes are needed.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from aunet.core.errors import InputError
from aunet.core.levels import SplitterStack
from aunet.core.tokens import BOS, EOS
from aunet.jobs.data import (
    COMPRESSIONS, VALIDATION_EVERY, Batch, Document, Encoded, _decompress, _record_document, parquet_records,
)  # fmt: skip

#: File types a streamed folder reads (after a compression suffix); others are skipped and reported.
STREAM_SUFFIXES = (".txt", ".jsonl", ".parquet")
#: A fingerprint hashes each file's first and last MiB (hashing terabytes on every resume is not
#: an option); sizes and modification times catch the rest.
FINGERPRINT_BYTES = 1 << 20


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in COMPRESSIONS else path


@attrs.frozen
class StreamPosition:
    """Where the next training row starts."""

    epoch: int = 0
    window: int = 0  # windows read in this epoch before the current one
    file: int = 0  # where the current window starts: file index,
    record: int = 0  # record within the file,
    document: int = 0  # and the stream's document number there
    offset: int = 0  # token offset of the next row in the current window's shuffled stream


class StreamSource:
    """The documents of a folder (or of one record file), lazily, in file order."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if not p.exists():
            raise InputError(f"--data: '{path}' does not exist")
        self.root = p
        self.notices: list[str] = []
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file())
            self.files = [q for q in files if _stem(q).suffix in STREAM_SUFFIXES and not q.name.startswith(".")]
            skipped = [q for q in files if q not in set(self.files)]
            if skipped:
                names = ", ".join(str(q.relative_to(p)) for q in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
                self.notices.append(f"--data: streaming {len(self.files)} file(s) of '{path}', skipped {len(skipped)} of "
                                    f"other types ({names}); .txt, .jsonl and .parquet files are read")  # fmt: skip
        else:
            self.files = [p]
        if not self.files:
            raise InputError(f"--data: '{path}' holds no .txt, .jsonl or .parquet files to stream")
        if any(q.suffix == ".parquet" for q in self.files):
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError:
                raise InputError("--data: reading .parquet files needs pyarrow (pip install aunet[parquet])") from None

    def name(self, index: int) -> str:
        f = self.files[index]
        return f.name if f == self.root else str(f.relative_to(self.root))

    def fingerprint(self) -> dict[str, Any]:
        files = []
        for i, f in enumerate(self.files):
            size = f.stat().st_size
            h = hashlib.sha256()
            with open(f, "rb") as handle:
                h.update(handle.read(FINGERPRINT_BYTES))
                if size > FINGERPRINT_BYTES:
                    handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                    h.update(handle.read(FINGERPRINT_BYTES))
            files.append({"name": self.name(i), "bytes": size, "sha256": h.hexdigest()})
        return {"files": files, "streamed": True}

    def records(self, index: int, start: int = 0) -> Iterator[tuple[int, Document]]:
        """(record number, document) of one file, from record ``start`` on."""
        path = self.files[index]
        stem = _stem(path)
        if stem.suffix == ".parquet":
            yield from parquet_records(path, start)
        elif stem.suffix == ".jsonl":
            yield from self._jsonl(path, start)
        elif start == 0:
            with open(path, "rb") as f:
                stored = f.read()
            yield 0, Document(self.name(index), _decompress(path, stored, 1 << 40))

    def _jsonl(self, path: Path, start: int) -> Iterator[tuple[int, Document]]:
        import bz2
        import gzip
        import lzma

        opener: Any = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(path.suffix, open)
        if path.suffix == ".zst":
            import zstandard

            handle = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
        else:
            handle = opener(path, "rb")
        record = 0
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if record >= start:
                    try:
                        value = json.loads(line)
                    except (ValueError, RecursionError) as exc:
                        raise InputError(f"--data: {path}, line {number}: not valid JSON ({exc})") from None
                    yield record, _record_document(path, f"line {number}", value)
                record += 1

    def documents(self, file: int = 0, record: int = 0, document: int = 0) -> Iterator[tuple[int, int, int, Document]]:
        """(file, record, document number, document) from a point of the stream to its end."""
        number = document
        for index in range(file, len(self.files)):
            for rec, doc in self.records(index, record if index == file else 0):
                yield index, rec, number, doc
                number += 1


def is_validation(number: int) -> bool:
    return number % VALIDATION_EVERY == VALIDATION_EVERY - 1


def encode(doc: Document, stack: SplitterStack) -> Encoded:
    body = np.frombuffer(doc.data, dtype=np.uint8)
    tokens = np.concatenate([[BOS], body.astype(np.int16), [EOS]]).astype(np.int16)
    levels = np.concatenate([[stack.depth], stack.levels(doc.data), [0]]).astype(np.uint8)
    return Encoded(tokens, levels)


def validation_documents(source: StreamSource, limit_bytes: int | None = None) -> Iterator[Document]:
    """The validation documents in stream order, until ``limit_bytes`` are reached."""
    total = 0
    for _, _, number, doc in source.documents():
        if not is_validation(number) or not doc.data:
            continue
        yield doc
        total += len(doc.data)
        if limit_bytes is not None and total >= limit_bytes:
            return


class StreamingData:
    """The trainer's data stream over a streamed corpus (``TrainingData``'s interface)."""

    def __init__(self, source: StreamSource, stack: SplitterStack, *, context: int, batch_size: int, seed: int,
                 buffer_bytes: int) -> None:  # fmt: skip
        self.source = source
        self.stack = stack
        self.context = context
        self.batch_size = batch_size
        self.seed = seed
        self.buffer_bytes = buffer_bytes
        self.position = StreamPosition()
        self.carry: tuple[int, int] | None = None  # the last position of the previous row (token, level)
        self._window: tuple[np.ndarray, np.ndarray] | None = None
        self._next_start: tuple[int, int, int] = (0, 0, 0)  # where the window after the current one starts
        self.documents_read = 0

    # -- windows -----------------------------------------------------------------------------------

    def _read_window(self, start: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]] | None:
        """The shuffled tokens and levels of the window starting at ``start``; None past the end."""
        docs: list[Encoded] = []
        size = 0
        nxt = None
        for file, record, number, doc in self.source.documents(*start):
            if size >= self.buffer_bytes:
                nxt = (file, record, number)
                break
            if is_validation(number) or not doc.data:
                continue
            docs.append(encode(doc, self.stack))
            size += len(doc.data)
            self.documents_read += 1
        if not docs:
            return None
        p = self.position
        order = np.random.default_rng([self.seed, p.epoch, p.window]).permutation(len(docs))
        tokens = np.concatenate([docs[i].tokens for i in order])
        levels = np.concatenate([docs[i].levels for i in order])
        return tokens, levels, nxt if nxt is not None else (len(self.source.files), 0, 0)

    def _load(self) -> None:
        p = self.position
        got = self._read_window((p.file, p.record, p.document))
        if got is None:
            raise InputError(f"the training split of {self.source.root} is empty: a streamed corpus needs at least "
                             f"{VALIDATION_EVERY} documents (every {VALIDATION_EVERY}th is validation)")  # fmt: skip
        tokens, levels, self._next_start = got
        self._window = (tokens, levels)

    def _advance_window(self) -> None:
        p = self.position
        file, record, document = self._next_start
        self._window = None
        if file >= len(self.source.files):  # the last window of the epoch was used up
            self.position = StreamPosition(epoch=p.epoch + 1)
        else:
            self.position = StreamPosition(p.epoch, p.window + 1, file, record, document, 0)

    def _take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` tokens and levels from the position on, across windows (and epochs)."""
        parts_t, parts_l = [], []
        need = count
        while need:
            if self._window is None:
                self._load()
            tokens, levels = self._window
            offset = self.position.offset
            piece_t, piece_l = tokens[offset : offset + need], levels[offset : offset + need]
            parts_t.append(piece_t)
            parts_l.append(piece_l)
            need -= len(piece_t)
            self.position = attrs.evolve(self.position, offset=offset + len(piece_t))
            if offset + len(piece_t) >= len(tokens):
                self._advance_window()
        return np.concatenate(parts_t), np.concatenate(parts_l)

    # -- the stream's interface ------------------------------------------------------------------

    def next(self) -> Batch:
        """``batch_size`` rows of ``context + 1`` positions; each row starts with the last position
        of the row before (inputs and shifted targets), across windows and epochs alike."""
        from aunet.core.tokens import IGNORE

        rows_t, rows_l, rows_y = [], [], []
        for _ in range(self.batch_size):
            if self.carry is None:
                tokens, levels = self._take(self.context + 1)
            else:
                more_t, more_l = self._take(self.context)
                tokens = np.concatenate([[self.carry[0]], more_t]).astype(np.int16)
                levels = np.concatenate([[self.carry[1]], more_l]).astype(np.uint8)
            self.carry = (int(tokens[-1]), int(levels[-1]))
            targets = tokens[1:].copy()
            targets[targets == BOS] = IGNORE  # the start of the next document is not predicted
            rows_t.append(tokens[:-1])
            rows_l.append(levels[:-1])
            rows_y.append(targets)
        return Batch(np.stack(rows_t), np.stack(rows_l), np.stack(rows_y))

    def state_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self.position), "carry": list(self.carry) if self.carry is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        fields = {k: int(v) for k, v in state.items() if k != "carry"}
        self.position = StreamPosition(**fields)
        self.carry = tuple(state["carry"]) if state.get("carry") is not None else None
        self._window = None
