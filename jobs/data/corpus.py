"""Corpora read whole: documents, the files and folders they come from, their fingerprints, and
the train/validation split.

Documents. The embedded corpus (the World English Bible, ``corpora/en_web.txt.xz``) has one
document per book (80 books). ``--data PATH`` takes a text file (one document), a ``.jsonl`` file
with a ``"text"`` field (one document per record), a ``.json`` file (an array of such records or of
strings, or JSON lines), a ``.parquet`` file (its ``text`` column), any of the first three
compressed (``.gz``, ``.xz``, ``.bz2``, ``.zst`` with the zstandard package), or a folder of such
files (sorted by path; other files are skipped, and the skip is reported). Decompression is
bounded: a corpus held in memory peaks at ``MEMORY_PER_BYTE`` bytes per byte of text, and that
peak may take at most half of the memory available (``max_corpus_bytes``).

Embedded corpora are named ``embedded:NAME`` wherever a corpus path is taken: ``en_web`` (the
default), ``en_pydoc`` (English prose from outside the Bible: the docstrings of Python's standard
library, for an out-of-domain tokenizer) and ``multilingual`` (the Bible with UDHR languages mixed
in and held out, the last section of this module).

Split, deterministic and documented (``Split``): with the ``final`` split (the default, the one
every reported number uses) document i is validation iff ``i % 10 == 9`` (8 of the 80 books:
II Samuel, Proverbs, Joel, Malachi... the list is in ``aunet eval --json``). The ``tuning`` split,
for choosing learning rates and other knobs, validates on documents ``i % 10 == 4`` instead, taken
from the training side, and leaves the final validation documents out entirely, so nothing is
tuned on the bytes the final numbers are measured on. A corpus of fewer than 10 documents is split
inside each document instead: its last 10%, from the first line break after that point, is the
final validation; the tuning split trains on the first 80% and validates on the next 10%.

Packing the documents into rows is ``aunet.jobs.data.packing``'s; streaming a corpus too large
to hold, ``aunet.jobs.data.streaming``'s.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs

from aunet.core.errors import InputError
from aunet.jobs.config import Split
from aunet.jobs.runtime.devices import host_memory_available

VALIDATION_EVERY = 10  # document i is validation iff i % 10 == 9
TUNING_REMAINDER = 4  # the tuning split's validation: documents i % 10 == 4
EMBEDDED = "en_web"
EMBEDDED_PREFIX = "embedded:"


def is_validation(number: int, split: Split = Split.FINAL) -> bool:
    """Whether document ``number`` (from 0, in corpus or stream order) is held out for validation."""
    remainder = VALIDATION_EVERY - 1 if split is Split.FINAL else TUNING_REMAINDER
    return number % VALIDATION_EVERY == remainder


def is_training(number: int, split: Split = Split.FINAL) -> bool:
    """Whether document ``number`` is trained on (the tuning split trains on neither validation)."""
    return number % VALIDATION_EVERY not in (VALIDATION_EVERY - 1, TUNING_REMAINDER if split is Split.TUNING else -1)


def embedded_name(path: str | Path | None) -> str | None:
    """The embedded corpus ``path`` names (None: the default one), or None for a path on disk."""
    if path is None:
        return EMBEDDED
    text = str(path)
    return text.removeprefix(EMBEDDED_PREFIX) if text.startswith(EMBEDDED_PREFIX) else None


def data_key(path: str | Path | None) -> str | None:
    """How a run or a comparison records its data: None (the default embedded corpus), an embedded
    corpus's ``embedded:NAME``, or a path made absolute."""
    if path is None or embedded_name(path) == EMBEDDED:
        return None
    if embedded_name(path) is not None:
        return str(path)
    return str(Path(path).resolve())


@attrs.frozen
class Document:
    """One document: a name for humans and its bytes."""

    name: str
    data: bytes


@attrs.frozen
class Corpus:
    """Documents split into training and validation, with where they came from.

    ``path`` is the resolved absolute path of a user corpus (None: the embedded one), and
    ``fingerprint`` the size and SHA-256 of every file that was read, so that a run can tell when
    its data changed. ``notices`` say what a folder scan skipped.
    """

    source: str
    train: tuple[Document, ...]
    validation: tuple[Document, ...]
    path: str | None = None
    fingerprint: dict[str, Any] = attrs.field(factory=dict)
    notices: tuple[str, ...] = ()

    @property
    def validation_bytes(self) -> bytes:
        return b"".join(d.data for d in self.validation)

    @property
    def documents(self) -> tuple[Document, ...]:
        """Every document, training and validation alike (for evaluating a whole file)."""
        return self.train + self.validation


# -- reading -----------------------------------------------------------------------------------

#: What a corpus file may be, by suffix (after a compression suffix): JSON lines or JSON records
#: with a "text" field; anything else is one document of raw bytes.
RECORD_SUFFIXES = (".jsonl", ".json")
#: The files a folder scan reads (others are skipped, and reported).
FOLDER_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
#: The compressions a corpus file may have, by suffix (read in memory and streamed alike).
COMPRESSIONS = (".gz", ".xz", ".bz2", ".zst")


#: What a corpus held in memory costs at its peak, per byte of its text: the text itself, one
#: level per byte, and the splitting of one document at a time (``SplitterEncoding.levels_into``); the data
#: is never copied into per-epoch streams (``Packer`` reads rows from the documents in place).
MEMORY_PER_BYTE = 3


def zstd_decompressor(path: Path) -> Any:
    """A zstandard decompressor for ``path``, or one line saying what to install (the package is
    optional: only .zst corpora need it)."""
    try:
        import zstandard
    except ImportError:
        raise InputError(
            f"--data: '{path}' is zstd-compressed; install the zstandard package "
            "(pip install zstandard) or decompress it first"
        ) from None
    return zstandard.ZstdDecompressor()


def max_corpus_bytes() -> int:
    """The most bytes of text a corpus held in memory may have: its peak (``MEMORY_PER_BYTE``
    times the text) may take half the memory available now; at least 64 MiB."""
    available = host_memory_available()
    if available is None:
        available = 8 << 30
    return max(64 << 20, available // (2 * MEMORY_PER_BYTE))


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


class _Reader:
    """Reads the files of one corpus within one memory budget, fingerprinting what it reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.limit = max_corpus_bytes()
        self.total = 0
        self.files: list[dict[str, Any]] = []

    def raw(self, path: Path) -> bytes:
        """The file's bytes, decompressed (bounded: a small .xz can hold gigabytes of zeros)."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > self.limit - self.total:  # read(limit + 1) would allocate the whole limit at once
                    raise self._too_large()
                stored = f.read(size + 1)
        except PermissionError:
            raise InputError(f"--data: '{path}' is not readable (permission denied)") from None
        except OSError as exc:
            raise InputError(f"--data: cannot read '{path}': {exc.strerror or exc}") from None
        name = path.name if path == self.root else str(path.relative_to(self.root))
        self.files.append({"name": name, "bytes": len(stored), "sha256": hashlib.sha256(stored).hexdigest()})
        try:
            data = _decompress(path, stored, self.limit - self.total)
        except TooLarge:
            raise self._too_large() from None
        self.total += len(data)
        if self.total > self.limit:
            raise self._too_large()
        return data

    def _too_large(self) -> InputError:
        return InputError(
            f"--data: '{self.root}' holds more than {self.limit / 2**30:.2f} GiB of text, the most aunet "
            f"holds in memory on this machine (a corpus in memory peaks at {MEMORY_PER_BYTE} bytes per "
            "byte of text, and may take half of the memory available now); stream it instead: a folder "
            'or .jsonl file with [train.data] stream = "on"'
        )

    def documents(self, path: Path) -> list[Document]:
        if path.suffix == ".parquet":
            docs = [doc for _, doc in parquet_records(path)]
            self.files.append(
                {
                    "name": path.name if path == self.root else str(path.relative_to(self.root)),
                    "bytes": path.stat().st_size,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
            )
            self.total += sum(len(d.data) for d in docs)
            if self.total > self.limit:
                raise self._too_large()
            return docs
        data = self.raw(path)
        stem = strip_compression(path)
        if stem.suffix in RECORD_SUFFIXES:
            return _records(path, data, whole_json=stem.suffix == ".json")
        return [Document(path.name if path == self.root else str(path.relative_to(self.root)), data)]


def parquet_records(path: Path, start: int = 0) -> Iterator[tuple[int, Document]]:
    """(row, document) of a .parquet file's ``text`` column, from row ``start`` on, a batch at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("--data: reading .parquet files needs pyarrow (pip install aunet[parquet])") from None
    table = pq.ParquetFile(path)
    if "text" not in table.schema_arrow.names:
        raise InputError(f"--data: {path} has no 'text' column (its columns: {', '.join(table.schema_arrow.names)})")
    record = 0
    for batch in table.iter_batches(columns=["text"], batch_size=1024):
        texts = batch.column(0).to_pylist()
        if record + len(texts) <= start:
            record += len(texts)
            continue
        for text in texts:
            if record >= start:
                yield record, _record_document(path, f"row {record}", text if text is not None else "")
            record += 1


class TooLarge(Exception):
    """Decompression went past its budget (the reader says what that means)."""


def strip_compression(path: Path) -> Path:
    """``path`` without its compression suffix (``a.jsonl.gz`` -> ``a.jsonl``), if it has one."""
    return path.with_suffix("") if path.suffix in COMPRESSIONS else path


def _decompress(path: Path, stored: bytes, budget: int) -> bytes:
    """``stored`` decompressed by its suffix, reading at most ``budget`` + 1 bytes of output."""
    import bz2
    import gzip
    import io

    suffix = path.suffix
    if suffix not in COMPRESSIONS:
        return stored
    try:
        if suffix == ".gz":
            stream: Any = gzip.GzipFile(fileobj=io.BytesIO(stored))
        elif suffix == ".xz":
            stream = lzma.LZMAFile(io.BytesIO(stored))  # noqa: SIM115 - closed by `with stream` below
        elif suffix == ".bz2":
            stream = bz2.BZ2File(io.BytesIO(stored))
        else:
            stream = zstd_decompressor(path).stream_reader(io.BytesIO(stored))
        with stream:
            chunks, size = [], 0
            while size <= budget:
                chunk = stream.read(min(1 << 20, budget + 1 - size))  # small reads: little beside the chunks
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > budget:  # past the limit: say so without joining what was read
                raise TooLarge()
            return b"".join(chunks)
    except (InputError, TooLarge):
        raise
    except Exception as exc:  # noqa: BLE001 - each library has its own error type for a bad stream
        raise InputError(f"--data: '{path}' is not a valid {suffix} file: {exc}") from None


def _records(path: Path, data: bytes, *, whole_json: bool) -> list[Document]:
    """Documents of JSON lines (or of one JSON array or object, for a .json file that is one)."""
    if whole_json:
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError):
            parsed = None  # not one JSON value: JSON lines, as a .jsonl file
        if parsed is not None:
            items = parsed if isinstance(parsed, list) else [parsed]
            del parsed
            items.reverse()  # popped from the end: each string is freed as its document is made
            docs: list[Document] = []
            while items:
                docs.append(_record_document(path, f"item {len(docs)}", items.pop()))
            return docs
    return [_record_document(path, f"line {number}", record) for number, record in json_lines(path, data)]


def json_lines(path: Path, data: bytes) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of JSON lines, one line copied at a time
    (never the whole file as a list of lines); InputError naming the line of a bad one."""
    pos, number = 0, 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line, pos = data[pos:end], end + 1
        number += 1
        if not line.strip():
            continue
        yield number, parse_json_line(path, number, line)


def parse_json_line(path: Path | str, number: int, line: bytes) -> Any:
    """One line of a JSON lines file, or an InputError naming the file and line."""
    try:
        return json.loads(line)
    except UnicodeDecodeError as exc:
        raise InputError(f"--data: {path}, line {number}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise InputError(f"--data: {path}, line {number}: JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"--data: {path}, line {number}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise InputError(f"--data: {path}, line {number}: not readable JSON ({str(exc).split(';')[0]})") from None


def _record_document(path: Path, where: str, record: Any) -> Document:
    text = record.get("text") if isinstance(record, dict) else record
    if not isinstance(text, str):
        raise InputError(f'--data: {path}, {where}: expected an object with a "text" string (or a string)')
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise InputError(
            f"--data: {path}, {where}: the text holds a lone surrogate (\\u{ord(bad):04x}), which is "
            "not a Unicode character and has no UTF-8 form"
        ) from None
    return Document(f"{path.name}:{where.removeprefix('line ')}", data)


class CorpusRead(NamedTuple):
    """What ``read_documents`` found in a user corpus."""

    documents: list[Document]  # the non-empty documents, in order
    fingerprint: dict[str, Any]  # {"files": [{"name", "bytes", "sha256"}, ...]} of every file read
    notices: list[str]  # what a folder scan skipped


def read_documents(path: str | Path) -> CorpusRead:
    """The documents, fingerprint and notices of a user corpus: a file (text, JSON lines, JSON; any of
    them compressed with .gz, .xz, .bz2 or .zst) or a folder of such files. InputError naming the
    path and the problem."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--data: '{path}' does not exist")
    reader = _Reader(p)
    notices = []
    if p.is_dir():
        candidates = sorted(q for q in p.rglob("*") if q.is_file())
        files = [q for q in candidates if strip_compression(q).suffix in FOLDER_SUFFIXES and not q.name.startswith(".")]
        chosen = set(files)
        skipped = [q for q in candidates if q not in chosen]
        if not files:
            raise InputError(f"--data: folder '{path}' holds no .txt, .jsonl, .json or .parquet files")
        if skipped:
            names = ", ".join(str(q.relative_to(p)) for q in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            notices.append(
                f"--data: read {len(files)} file(s) of '{path}', skipped {len(skipped)} of other types "
                f"({names}); a folder's .txt, .jsonl, .json and .parquet files are read"
            )
        docs = [d for f in files for d in reader.documents(f)]
    elif not p.is_file():
        raise InputError(f"--data: '{path}' is not a regular file (a device or a pipe)")
    else:
        docs = reader.documents(p)
    docs = [d for d in docs if d.data]
    if not docs:
        raise InputError(f"--data: '{path}' holds no text (every document is empty)")
    return CorpusRead(docs, {"files": reader.files}, notices)


def line_cut(data: bytes, fraction: float) -> int:
    """The offset ``fraction`` of the way into ``data``, moved to just after the next line break
    (where it is when the only one left ends ``data``)."""
    cut = int(len(data) * fraction)
    newline = data.find(b"\n", cut)
    return newline + 1 if 0 <= newline < len(data) - 1 else cut


def split(docs: Sequence[Document], source: str, which: Split = Split.FINAL, **where: Any) -> Corpus:
    """The deterministic train/validation split (module docstring)."""
    if len(docs) >= VALIDATION_EVERY:
        train = tuple(d for i, d in enumerate(docs) if is_training(i, which))
        validation = tuple(d for i, d in enumerate(docs) if is_validation(i, which))
        return Corpus(source, train, validation, **where)
    train, validation = [], []
    start, end = (0.8, 0.9) if which is Split.TUNING else (0.9, 1.0)
    label = "80-90%" if which is Split.TUNING else "last 10%"
    for d in docs:
        a, b = line_cut(d.data, start), line_cut(d.data, end)
        train.append(Document(d.name, d.data[:a]))
        validation.append(Document(f"{d.name} ({label})", d.data[a:b]))
    return Corpus(source, tuple(d for d in train if d.data), tuple(d for d in validation if d.data), **where)


def load_corpus(path: str | Path | None, which: Split = Split.FINAL) -> Corpus:
    """The embedded corpus (``path`` None or ``embedded:NAME``) or a user corpus, split."""
    name = embedded_name(path)
    if name is not None:
        return embedded_corpus(name, which)
    docs, fingerprint, notices = read_documents(path)
    resolved = str(Path(path).resolve())
    return split(docs, str(path), which, path=resolved, fingerprint=fingerprint, notices=tuple(notices))


EMBEDDED_CORPORA = ("en_web", "en_pydoc", "multilingual")


def embedded_corpus(name: str, which: Split = Split.FINAL) -> Corpus:
    """An embedded corpus by name (``EMBEDDED_CORPORA``), split."""
    from aunet.core.resources import corpus_path

    if name not in EMBEDDED_CORPORA:
        known = ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED_CORPORA)
        raise InputError(f"no embedded corpus '{EMBEDDED_PREFIX}{name}'; the embedded ones: {known}")
    if name == MULTILINGUAL:
        return multilingual_corpus(which)
    stored = corpus_path(name).read_bytes()
    fingerprint = {"embedded": name, "sha256": hashlib.sha256(stored).hexdigest()}
    path = None if name == EMBEDDED else EMBEDDED_PREFIX + name
    docs = embedded_documents() if name == EMBEDDED else module_documents(name)
    return split(docs, EMBEDDED_PREFIX + name, which, path=path, fingerprint=fingerprint)


def module_documents(name: str) -> list[Document]:
    """An embedded corpus whose documents start at lines ``Module <name>`` (``en_pydoc``)."""
    from aunet.core.resources import read_corpus

    text = read_corpus(name)
    starts = [(m.start(), m.group(1).decode()) for m in re.finditer(rb"(?m)^Module (\S+)\n", text)]
    return [
        Document(title, text[start : starts[i + 1][0] if i + 1 < len(starts) else len(text)])
        for i, (start, title) in enumerate(starts)
    ]


def fingerprint_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, for humans ("corpus.txt: 300,000 -> 5,000 bytes")."""
    if before.get("embedded") or now.get("embedded"):
        return [] if before == now else ["the embedded corpus is another version"]
    old = {f["name"]: f for f in before.get("files", [])}
    new = {f["name"]: f for f in now.get("files", [])}
    changes = [f"{name}: removed" for name in sorted(old.keys() - new.keys())]
    changes += [f"{name}: added ({new[name]['bytes']:,} bytes)" for name in sorted(new.keys() - old.keys())]
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        if a["bytes"] != b["bytes"]:
            changes.append(f"{name}: {a['bytes']:,} -> {b['bytes']:,} bytes")
        elif a["sha256"] != b["sha256"]:
            changes.append(f"{name}: same size ({a['bytes']:,} bytes), other content (SHA-256 differs)")
    return changes


def xz_bits_per_byte(data: bytes) -> float:
    """Bits per byte of ``xz -9e`` (LZMA2, preset 9 extreme) on ``data``, container included."""
    if not data:
        return float("nan")
    return 8.0 * len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)) / len(data)


# -- embedded:multilingual -------------------------------------------------------------------------
#
# ``embedded:multilingual``: English from the embedded Bible with UDHR languages mixed in, some
# seen well, some seen little and some never, for measuring what a model carries from one language
# to another.
#
# The UDHR texts (``corpora/udhr.tar.xz``) are parallel, so every language is measured on the same
# articles. Each text is cut at line breaks into fractions of its bytes:
#
# * **seen** languages (27, eleven scripts) train on their first 80% (``final`` split; 60% with the
#   ``tuning`` split);
# * **low-resource** languages (8) train on their first 8% only, about one article: a language met
#   briefly, as low-resource languages are in a real crawl;
# * **held-out** languages (10) are never trained on: relatives of seen languages (Galician,
#   Catalan, Slovak, Bokmål, Afrikaans, Croatian, traditional Chinese) and languages alone in their
#   script or family (Basque, Georgian, Welsh).
#
# Every language validates on the same stretch of its text: the last 20% (``final``), or 60-80%
# (``tuning``, which trains seen languages on the first 60% only). The English part is split by books
# as the ``en_web`` corpus is, and one training book in eight is kept (9 books, 0.68 MB), so that the
# UDHR languages are about a third of the training bytes (with every book they would be 7%, and a
# small model spends its whole budget on English: at 3e12 FLOPs an AU-Net met 5 KB of Russian and
# gave it 19 bits per byte). Validation documents are named ``udhr <group> <file>`` so that ``aunet
# eval --suite multilingual`` reports bits per byte by group and language; the English validation
# books, all of them, keep their names.

MULTILINGUAL = "multilingual"
SEEN = [
    "fra",
    "spa",
    "ita",
    "nld",
    "swe",
    "pol",
    "ces",
    "rus",
    "bul",
    "tur",
    "fin",
    "hun",
    "arb",
    "heb",
    "hin",
    "ben",
    "tam",
    "tha",
    "vie",
    "ind",
    "swh",
    "yor",
    "cmn_hans",
    "jpn",
    "kor",
    "hye",
    "amh",
]
LOW = ["dan", "ukr", "urd", "mar", "est", "lit", "tgl", "zul"]
HELD_OUT = ["glg", "cat", "slk", "nob", "afr", "hrv", "cmn_hant", "eus", "kat", "cym"]
GROUPS = {"seen": SEEN, "low": LOW, "held-out": HELD_OUT}
LOW_FRACTION = 0.08
ENGLISH_EVERY = 8  # one training book in eight


def _trained_fraction(group: str, which: Split) -> float:
    if group == "seen":
        return 0.6 if which is Split.TUNING else 0.8
    return LOW_FRACTION if group == "low" else 0.0


def language_of(document: str) -> tuple[str, str] | None:
    """(group, file stem) of a multilingual validation document's name, None for an English book."""
    parts = document.split(" ")
    if len(parts) == 3 and parts[0] == "udhr" and parts[1] in GROUPS:
        return parts[1], parts[2]
    return None


def multilingual_corpus(which: Split = Split.FINAL) -> Corpus:
    """The mix (the comment above), split."""
    from aunet.jobs.data.udhr import udhr_texts

    english = split(embedded_documents(), EMBEDDED_PREFIX + EMBEDDED, which)
    texts = {t.file.removesuffix(".txt"): t.data for t in udhr_texts()}
    missing = [stem for stems in GROUPS.values() for stem in stems if stem not in texts]
    assert not missing, f"the embedded UDHR archive lacks {missing}"
    start, end = (0.6, 0.8) if which is Split.TUNING else (0.8, 1.0)
    train, validation = list(english.train[::ENGLISH_EVERY]), list(english.validation)
    for group, stems in GROUPS.items():
        for stem in stems:
            data = texts[stem]
            share = _trained_fraction(group, which)
            trained = line_cut(data, share) if share else 0  # a cut at 0 would move to the first line break
            if trained:
                train.append(Document(f"udhr {stem}", data[:trained]))
            validation.append(Document(f"udhr {group} {stem}", data[line_cut(data, start) : line_cut(data, end)]))
    fingerprint = {"embedded": MULTILINGUAL, "sha256": _fingerprint()}
    return Corpus(
        EMBEDDED_PREFIX + MULTILINGUAL,
        tuple(train),
        tuple(d for d in validation if d.data),
        path=EMBEDDED_PREFIX + MULTILINGUAL,
        fingerprint=fingerprint,
    )


def _fingerprint() -> str:
    """SHA-256 over the two archives the mix is made of, and the mix's own definition."""
    from aunet.core.resources import CORPORA

    digest = hashlib.sha256()
    for file in (f"{EMBEDDED}.txt.xz", "udhr.tar.xz"):
        digest.update((CORPORA / file).read_bytes())
    digest.update(repr((GROUPS, LOW_FRACTION, ENGLISH_EVERY)).encode())
    return digest.hexdigest()
