"""The text a run trains on, held in memory or streamed, behind one interface for the trainer.

``training_text(path, config)`` reads a corpus whole (``aunet.jobs.data.corpus``: the embedded corpus,
a file, a small folder) or opens it as a stream (``aunet.jobs.data.streaming``: folders and record
files, lazily, memory bounded by the shuffle window), as ``[train.data] stream`` says.
"""

from __future__ import annotations

import lzma
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from aunet.core.encoding import Encoded, Encoding
from aunet.jobs.config import DataSpec, Streaming
from aunet.jobs.data.corpus import (
    COMPRESSIONS,
    Corpus,
    embedded_name,
    is_training,
    load_corpus,
    strip_compression,
    xz_bits_per_byte,
)
from aunet.jobs.data.packing import TrainingData, encode_documents
from aunet.jobs.data.streaming import STREAM_SUFFIXES, StreamingData, StreamSource, validation_documents

#: ``stream = "auto"`` streams folders and files larger than this on disk.
AUTO_STREAM_BYTES = 256 << 20
#: Training bytes a streamed run measures its levels' contraction on.
CONTRACTION_SAMPLE_BYTES = 16 << 20


def _streamable(path: Path) -> bool:
    return path.is_dir() or strip_compression(path).suffix in STREAM_SUFFIXES


def _disk_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(
            p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in (*STREAM_SUFFIXES, *COMPRESSIONS)
        )
    return path.stat().st_size


class MemoryText:
    """A corpus read whole (``aunet.jobs.data.corpus.Corpus``)."""

    streamed = False

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.source = corpus.source
        self.path = corpus.path
        self.fingerprint = corpus.fingerprint
        self.notices = corpus.notices
        self._encoded: tuple[Encoding, list[Encoded], list[Encoded]] | None = None

    def _encode(self, encoding: Encoding) -> tuple[list[Encoded], list[Encoded]]:
        if self._encoded is None or self._encoded[0] != encoding:
            self._encoded = (
                encoding,
                encode_documents(self.corpus.train, encoding),
                encode_documents(self.corpus.validation, encoding),
            )
        return self._encoded[1], self._encoded[2]

    def has_validation(self) -> bool:
        return bool(self.corpus.validation)

    def contraction_levels(self, encoding: Encoding) -> Iterable[Any]:
        return (d.levels for d in self._encode(encoding)[0])

    def training(self, encoding: Encoding, *, context: int, batch_size: int, seed: int) -> TrainingData:
        return TrainingData(
            self._encode(encoding)[0], context=context, batch_size=batch_size, seed=seed, encoding=encoding
        )

    def validation(self, encoding: Encoding, limit_bytes: int | None = None) -> list[Encoded]:
        """The encoded validation documents, up to the one that completes ``limit_bytes``
        predicted positions (what ``evaluation_rows`` reads of them)."""
        encoded = self._encode(encoding)[1]
        if limit_bytes is None:
            return encoded
        kept, budget = 0, limit_bytes
        while kept < len(encoded) and budget > 0:
            budget -= len(encoded[kept]) - 1
            kept += 1
        return encoded[:kept]

    def xz_bpb(self, limit_bytes: int | None = None) -> float:
        return xz_bits_per_byte(self.corpus.validation_bytes[:limit_bytes])


class StreamedText:
    """A corpus read lazily (``aunet.jobs.data.streaming``)."""

    streamed = True

    def __init__(self, source: StreamSource, config: DataSpec) -> None:
        self.stream_source = source
        self.config = config
        self.source = str(source.root)
        self.path = str(source.root.resolve())
        self.fingerprint = source.fingerprint()
        self.notices = tuple(source.notices)

    def has_validation(self) -> bool:
        return next(iter(validation_documents(self.stream_source, 1, self.config.split)), None) is not None

    def contraction_levels(self, encoding: Encoding) -> Iterator[Any]:
        size = 0
        for _, _, _, number, doc in self.stream_source.documents():
            if not is_training(number, self.config.split) or not doc.data:
                continue
            yield encoding.encode(doc.data).levels
            size += len(doc.data)
            if size >= CONTRACTION_SAMPLE_BYTES:
                return

    def training(self, encoding: Encoding, *, context: int, batch_size: int, seed: int) -> StreamingData:
        return StreamingData(
            self.stream_source,
            encoding,
            context=context,
            batch_size=batch_size,
            seed=seed,
            buffer_bytes=self.config.buffer_bytes,
            which=self.config.split,
        )

    def validation(self, encoding: Encoding, limit_bytes: int | None = None) -> Iterator[Encoded]:
        return (
            encoding.encode(doc.data)
            for doc in validation_documents(self.stream_source, limit_bytes, self.config.split)
        )

    def xz_bpb(self, limit_bytes: int | None = None) -> float:
        compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)
        size = n = 0
        for doc in validation_documents(self.stream_source, limit_bytes, self.config.split):
            data = doc.data[: None if limit_bytes is None else max(limit_bytes - n, 0)]
            size += len(compressor.compress(data))
            n += len(data)
        size += len(compressor.flush())
        return 8.0 * size / n if n else float("nan")


def training_text(
    path: str | Path | None, config: DataSpec, notify: Callable[[str], None] | None = None
) -> MemoryText | StreamedText:
    """The run's text: in memory or streamed, as ``config.stream`` says (``auto``: stream folders
    and .jsonl/.parquet files larger than 256 MiB on disk; ``on`` streams any file or folder).
    ``notify`` hears what a stream finds as it reads (documents cut into parts)."""
    if embedded_name(path) is not None:
        return MemoryText(load_corpus(path, config.split))
    p = Path(path)
    if config.stream is Streaming.ON and p.exists():
        return StreamedText(StreamSource(p, notify), config)
    if p.exists() and _streamable(p) and config.stream is Streaming.AUTO and _disk_bytes(p) > AUTO_STREAM_BYTES:
        return StreamedText(StreamSource(p, notify), config)
    return MemoryText(load_corpus(path, config.split))
