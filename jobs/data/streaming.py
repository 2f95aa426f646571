"""Streaming corpora: folders (or single files) of text read lazily, with bounded memory.

A streamed corpus is a folder of ``.txt`` (one document each), ``.jsonl`` (one document per line,
a ``"text"`` field; also compressed: ``.jsonl.gz``, ``.jsonl.xz``, ``.jsonl.bz2``, ``.jsonl.zst``)
and ``.parquet`` files (a ``text`` column; ``pip install aunet[parquet]``), read in file order,
or one such file (a ``.txt`` file too, compressed or not). Documents are numbered in that order;
document i is validation iff ``i % 10 == 9``, as for corpora held in memory.

**Long documents come in parts.** A document longer than ``PART_BYTES`` (4 MiB) is read as
consecutive parts of at most that size, each cut after the last line break in its final 64 KiB
(or, without one, at a character boundary), and each part is a document of its own (BOS, bytes,
EOS; numbered, so a long document gives validation parts too). So a single 1 GB ``.txt`` file
streams like a folder of 256 files: memory never holds more than a window and one part. A
``.jsonl`` line may be at most ``MAX_RECORD_BYTES`` (64 MiB), since JSON must be parsed whole;
a longer one is one error naming the line. Every cut is counted and reported once.

Training reads the stream in **windows**: documents are read (and split into levels, once each)
until the window holds ``buffer_bytes`` bytes, the window is shuffled by ``(seed, epoch,
window)``, and rows of ``context + 1`` positions are read from the shuffled documents in place
(``aunet.jobs.data.packing.Packed``: nothing is copied together), a row continuing into the next
window where one ends. Memory is one window (its bytes and their levels: two bytes per byte) and a file
reader, whatever the corpus size. The position in the stream (epoch, window, the file, record and
byte where the window starts, and the offset in the window) is part of every checkpoint: a resume
reads the same window again and continues exactly.

A file that cannot be read (a truncated ``.gz``, a corrupt ``.xz``, a ``.parquet`` that is not
one) is one error naming the file and the record where reading stopped; only regular files are
read (a FIFO named ``.jsonl`` is refused, never waited on).

Evaluation reads the validation documents lazily too, up to its byte budget.

Every rank of a distributed run reads the same stream (each keeps its rows of every micro-batch):
splitting runs at 20 to 80 MB/s per process, far above what a training process consumes, so no
worker processes are needed.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np

from aunet.core.encoding import Encoded, Encoding
from aunet.core.errors import InputError
from aunet.core.tokens import BOS, IGNORE
from aunet.jobs.data.corpus import (
    COMPRESSIONS,
    VALIDATION_EVERY,
    Document,
    Split,
    _record_document,
    is_training,
    is_validation,
    parquet_records,
    parse_json_line,
    strip_compression,
    zstd_decompressor,
)
from aunet.jobs.data.packing import Batch, Packed

#: File types a streamed folder reads (after a compression suffix); others are skipped and reported.
STREAM_SUFFIXES = (".txt", ".jsonl", ".parquet")
#: A fingerprint hashes each file's first and last MiB (hashing terabytes on every resume is not
#: an option); sizes and modification times catch the rest.
FINGERPRINT_BYTES = 1 << 20
#: Documents longer than this are read in parts of at most this many bytes.
PART_BYTES = 4 << 20
#: A part ends after the last line break in its final this-many bytes, where there is one.
PART_SLACK = 64 << 10
#: The longest ``.jsonl`` line a stream reads (a JSON value is parsed whole).
MAX_RECORD_BYTES = 64 << 20
#: Bytes read at a time from a file.
READ_BYTES = 1 << 20


def cut_point(data: bytes | bytearray, limit: int) -> int:
    """Where a part of ``data`` (longer than ``limit``) ends: after the last line break in its
    final ``PART_SLACK`` bytes, else at the last character boundary at or before ``limit``."""
    newline = data.rfind(b"\n", max(0, limit - PART_SLACK), limit)
    if newline >= 0:
        return newline + 1
    cut = limit
    while cut > limit - 3 and cut > 0 and (data[cut] & 0xC0) == 0x80:  # a continuation byte starts the rest
        cut -= 1
    return cut


def parts_of(data: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, part) of one record's bytes, from ``start`` on (a part boundary)."""
    pos = start
    while True:
        rest = len(data) - pos
        if rest <= PART_BYTES:
            if rest > 0 or pos == 0:
                yield pos, data[pos:]
            return
        cut = pos + cut_point(memoryview(data)[pos : pos + PART_BYTES + 1].tobytes(), PART_BYTES)
        yield pos, data[pos:cut]
        pos = cut


@attrs.frozen
class StreamPosition:
    """Where the next training row starts."""

    epoch: int = 0
    window: int = 0  # windows read in this epoch before the current one
    file: int = 0  # where the current window starts: file index,
    record: int = 0  # record within the file,
    document: int = 0  # the stream's document number there,
    byte: int = 0  # and the byte of the record (a part of a long document)
    offset: int = 0  # token offset of the next row in the current window's shuffled stream


class StreamSource:
    """The documents of a folder (or of one file), lazily, in file order."""

    def __init__(self, path: str | Path, notify: Callable[[str], None] | None = None) -> None:
        p = Path(path)
        if not p.exists():
            raise InputError(f"--data: '{path}' does not exist")
        self.root = p
        self.notices: list[str] = []
        self.notify = notify  # told once, the first time a document is cut into parts
        self.cut_documents = 0
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if not q.is_dir())
            self.files = [
                q
                for q in found
                if q.is_file() and strip_compression(q).suffix in STREAM_SUFFIXES and not q.name.startswith(".")
            ]
            chosen = set(self.files)
            skipped = [q for q in found if q not in chosen]
            if skipped:
                names = ", ".join(str(q.relative_to(p)) for q in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
                self.notices.append(
                    f"--data: streaming {len(self.files)} file(s) of '{path}', skipped {len(skipped)} "
                    f"that are not regular .txt, .jsonl or .parquet files ({names})"
                )
        elif not p.is_file():
            raise InputError(
                f"--data: '{path}' is not a regular file (a FIFO, a socket or a device); give a file or a folder"
            )
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

    # -- reading one file ------------------------------------------------------------------------

    def records(self, index: int, start: int = 0, byte: int = 0) -> Iterator[tuple[int, int, Document]]:
        """(record number, byte offset, document part) of one file, from record ``start`` (and
        the part at ``byte`` of it) on; any failure to read is one InputError naming the file."""
        path = self.files[index]
        stem = strip_compression(path)
        where = {"record": start}
        try:
            if stem.suffix == ".parquet":
                for record, doc in parquet_records(path, start):
                    where["record"] = record
                    yield from self._parts(record, doc, byte if record == start else 0)
            elif stem.suffix == ".jsonl":
                yield from self._jsonl(path, start, byte, where)
            elif start == 0:
                yield from self._text(index, byte)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - gzip, lzma, bz2, zstandard and pyarrow each have their own errors
            what = "record" if stem.suffix in (".jsonl", ".parquet") else "byte"
            at = where["record"] if what == "record" else where.get("byte", byte)
            raise InputError(
                f"--data: {path}: cannot read it past {what} {at:,} ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); the file is "
                "truncated or corrupt: repair or remove it (a resume then needs the same data)"
            ) from None

    def _parts(self, record: int, doc: Document, byte: int) -> Iterator[tuple[int, int, Document]]:
        if len(doc.data) <= PART_BYTES:
            yield record, 0, doc
            return
        self._cut(doc.name)
        for offset, part in parts_of(doc.data, byte):
            yield record, offset, Document(f"{doc.name}@{offset}", part)

    def _cut(self, name: str) -> None:
        self.cut_documents += 1
        if self.cut_documents == 1 and self.notify is not None:
            self.notify(
                f"note: documents longer than {PART_BYTES >> 20} MiB are read in parts of at most "
                f"{PART_BYTES >> 20} MiB, each a document of its own (first: {name})"
            )

    def _open(self, path: Path) -> IO[bytes]:
        import bz2
        import gzip
        import lzma

        if path.suffix == ".zst":
            return io.BufferedReader(zstd_decompressor(path).stream_reader(open(path, "rb")))
        opener: Any = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(path.suffix, open)
        return opener(path, "rb")

    def _jsonl(self, path: Path, start: int, byte: int, where: dict[str, int]) -> Iterator[tuple[int, int, Document]]:
        record = 0
        with self._open(path) as handle:
            number = 0
            while True:
                line = handle.readline(MAX_RECORD_BYTES + 1)
                if not line:
                    return
                number += 1
                if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                    raise InputError(
                        f"--data: {path}, line {number}: longer than {MAX_RECORD_BYTES >> 20} MiB, the "
                        "longest JSON line a stream reads; cut the document into several records, or "
                        "put it in a .txt file of its own (read in parts)"
                    )
                if not line.strip():
                    continue
                where["record"] = record
                if record >= start:
                    doc = _record_document(path, f"line {number}", parse_json_line(path, number, line))
                    yield from self._parts(record, doc, byte if record == start else 0)
                record += 1

    def _text(self, index: int, byte: int) -> Iterator[tuple[int, int, Document]]:
        """One .txt file (compressed or not) as one document, in parts, from ``byte`` on."""
        path = self.files[index]
        name = self.name(index)
        with self._open(path) as handle:
            if byte:
                if path.suffix in COMPRESSIONS:
                    left = byte
                    while left:
                        skipped = handle.read(min(left, READ_BYTES))
                        if not skipped:
                            return
                        left -= len(skipped)
                else:
                    handle.seek(byte)
            pending = bytearray()
            offset = byte
            first = True
            while True:
                while len(pending) <= PART_BYTES:
                    chunk = handle.read(READ_BYTES)
                    if not chunk:
                        break
                    pending += chunk
                if len(pending) <= PART_BYTES:  # the rest of the file
                    if pending or (first and not byte):
                        yield 0, offset, Document(name if not offset else f"{name}@{offset}", bytes(pending))
                    return
                if first and not byte:
                    self._cut(name)
                first = False
                cut = cut_point(pending, PART_BYTES)
                yield 0, offset, Document(name if not offset else f"{name}@{offset}", bytes(pending[:cut]))
                del pending[:cut]
                offset += cut

    def documents(
        self, file: int = 0, record: int = 0, document: int = 0, byte: int = 0
    ) -> Iterator[tuple[int, int, int, int, Document]]:
        """(file, record, byte, document number, document) from a point of the stream to its end."""
        number = document
        for index in range(file, len(self.files)):
            first = index == file
            for rec, offset, doc in self.records(index, record if first else 0, byte if first else 0):
                yield index, rec, offset, number, doc
                number += 1


def validation_documents(
    source: StreamSource, limit_bytes: int | None = None, which: Split = Split.FINAL
) -> Iterator[Document]:
    """The validation documents of split ``which`` in stream order, until ``limit_bytes`` are reached."""
    total = 0
    for _, _, _, number, doc in source.documents():
        if not is_validation(number, which) or not doc.data:
            continue
        yield doc
        total += len(doc.data)
        if limit_bytes is not None and total >= limit_bytes:
            return


class StreamingData:
    """The trainer's data stream over a streamed corpus (``TrainingData``'s interface)."""

    def __init__(
        self,
        source: StreamSource,
        encoding: Encoding,
        *,
        context: int,
        batch_size: int,
        seed: int,
        buffer_bytes: int,
        which: Split = Split.FINAL,
    ) -> None:
        self.source = source
        self.which = which
        self.encoding = encoding
        self.context = context
        self.batch_size = batch_size
        self.seed = seed
        self.buffer_bytes = buffer_bytes
        self.position = StreamPosition()
        self.carry: tuple[int, int] | None = None  # the last position of the previous row (token, level)
        self._window: Packed | None = None
        self._next_start: tuple[int, int, int, int] = (0, 0, 0, 0)  # where the next window starts
        self.documents_read = 0

    # -- windows -----------------------------------------------------------------------------------

    def _read_window(self, start: tuple[int, int, int, int]) -> tuple[Packed, tuple[int, int, int, int]] | None:
        """The window starting at ``start`` (file, record, document, byte), shuffled; None past the end."""
        docs: list[Encoded] = []
        size = 0
        nxt = None
        file, record, document, byte = start
        for f, rec, offset, number, doc in self.source.documents(file, record, document, byte):
            if size >= self.buffer_bytes:
                nxt = (f, rec, number, offset)
                break
            if not is_training(number, self.which) or not doc.data:
                continue
            docs.append(self.encoding.encode(doc.data))
            size += len(doc.data)
            self.documents_read += 1
        if not docs:
            return None
        p = self.position
        order = np.random.default_rng([self.seed, p.epoch, p.window]).permutation(len(docs))
        return Packed(docs, order), nxt if nxt is not None else (len(self.source.files), 0, 0, 0)

    def _load(self) -> None:
        p = self.position
        got = self._read_window((p.file, p.record, p.document, p.byte))
        if got is None:
            raise InputError(
                f"the training split of {self.source.root} is empty: a streamed corpus needs at least "
                f"{VALIDATION_EVERY} documents (every {VALIDATION_EVERY}th is validation)"
            )
        self._window, self._next_start = got

    def _advance_window(self) -> None:
        p = self.position
        file, record, document, byte = self._next_start
        self._window = None
        if file >= len(self.source.files):  # the last window of the epoch was used up
            self.position = StreamPosition(epoch=p.epoch + 1)
        else:
            self.position = StreamPosition(p.epoch, p.window + 1, file, record, document, byte, 0)

    def _take(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` tokens and levels from the position on, across windows (and epochs)."""
        parts_t, parts_l = [], []
        need = count
        while need:
            if self._window is None:
                self._load()
            offset = self.position.offset
            piece_t, piece_l = self._window.read(offset, need)
            parts_t.append(piece_t)
            parts_l.append(piece_l)
            need -= len(piece_t)
            self.position = attrs.evolve(self.position, offset=offset + len(piece_t))
            if offset + len(piece_t) >= self._window.total:
                self._advance_window()
        return np.concatenate(parts_t), np.concatenate(parts_l)

    # -- the stream's interface ------------------------------------------------------------------

    def next(self) -> Batch:
        """``batch_size`` rows of ``context + 1`` positions; each row starts with the last position
        of the row before (inputs and shifted targets), across windows and epochs alike."""
        rows_t, rows_l, rows_y = [], [], []
        for _ in range(self.batch_size):
            if self.carry is None:
                tokens, levels = self._take(self.context + 1)
            else:
                more_t, more_l = self._take(self.context)
                tokens = np.concatenate([np.array([self.carry[0]], dtype=more_t.dtype), more_t])
                levels = np.concatenate([np.array([self.carry[1]], dtype=np.uint8), more_l])
            self.carry = (int(tokens[-1]), int(levels[-1]))
            targets = tokens[1:].copy()
            targets[targets == BOS] = IGNORE  # the start of the next document is not predicted
            rows_t.append(tokens[:-1])
            rows_l.append(levels[:-1])
            rows_y.append(targets)
        tokens = np.stack(rows_t)
        return Batch(tokens, np.stack(rows_l), np.stack(rows_y), self.encoding.covered(tokens))

    def state_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self.position), "carry": list(self.carry) if self.carry is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        fields = {k: int(v) for k, v in state.items() if k != "carry"}
        self.position = StreamPosition(**fields)
        self.carry = tuple(state["carry"]) if state.get("carry") is not None else None
        self._window = None
