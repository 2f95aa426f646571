"""Bytes to characters: the view of a document that every splitter reads (docs/method.md section 2).

Splitting rules are stated on characters, but the model reads bytes, and the bytes may be any
bytes at all. This module decodes one document once, vectorized, into a character view that all
splitters of a stack share, and fixes the three rules that make every splitter UTF-8 safe and
prefix-stable by construction:

1. A boundary chosen at a character is placed on the **last byte** of that character, so no
   boundary ever falls inside a valid multi-byte character.
2. A byte that is not part of a valid UTF-8 sequence is a one-byte character of its own, with the
   code point ``INVALID`` (one past the last Unicode code point), so rules see it as a symbol.
3. A byte that, when it arrived, could still have been the start of a valid multi-byte character
   (a lead byte, or a lead byte and valid continuation bytes, later cut short) is never a boundary:
   its level had to be decided on arrival, before the sequence was known to be broken. Rules still
   see those bytes as characters; only their marks are dropped.

Dimension alphabet: T bytes, M characters (M <= T).
"""

from __future__ import annotations

import base64
import functools
import zlib
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from aunet.core import _unicode_data

#: Code point given to a byte that is not part of a valid UTF-8 sequence.
INVALID = 0x110000
#: Size of every character table: all Unicode code points plus ``INVALID``.
TABLE_SIZE = 0x110001

#: Unicode White_Space (PropList.txt; unchanged since Unicode 6.3).
WHITE_SPACE = (
    *range(0x09, 0x0E),
    0x20,
    0x85,
    0xA0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)
#: The characters that count as line breaks in the word rules (the reference's ``[\r\n]``).
NEWLINES = (0x0A, 0x0D)

CATEGORIES: tuple[str, ...] = _unicode_data.CATEGORIES
SCRIPTS: tuple[str, ...] = _unicode_data.SCRIPTS
GRAPHEME_BREAKS: tuple[str, ...] = _unicode_data.GRAPHEME_BREAKS
UNICODE_VERSION: str = _unicode_data.UNICODE_VERSION


def _decode_runs(name: str) -> np.ndarray:
    """(TABLE_SIZE,) uint8 table of one generated property; ``INVALID`` gets the value 255."""
    blob = zlib.decompress(base64.b64decode("".join(getattr(_unicode_data, name))))
    n = getattr(_unicode_data, f"{name}_RUNS")
    starts = np.frombuffer(blob[: 4 * n], dtype=np.uint32).astype(np.int64)
    values = np.frombuffer(blob[4 * n :], dtype=np.uint8)
    lengths = np.diff(np.append(starts, INVALID))
    table = np.append(np.repeat(values, lengths), np.uint8(255))
    table.flags.writeable = False
    return table


@functools.cache
def general_category() -> np.ndarray:
    """(TABLE_SIZE,) uint8: index into ``CATEGORIES`` of each code point; ``INVALID`` gets
    ``len(CATEGORIES)``. Built once from the committed run-length table (a few ms)."""
    table = _decode_runs("GENERAL_CATEGORY").copy()
    table[INVALID] = len(CATEGORIES)
    table.flags.writeable = False
    return table


@functools.cache
def script() -> np.ndarray:
    """(TABLE_SIZE,) uint8: index into ``SCRIPTS`` (Unicode Script property); 255 for ``INVALID``."""
    return _decode_runs("SCRIPT")


@functools.cache
def grapheme_break() -> np.ndarray:
    """(TABLE_SIZE,) uint8: index into ``GRAPHEME_BREAKS`` (UAX #29); 255 for ``INVALID``."""
    return _decode_runs("GRAPHEME_BREAK")


@functools.cache
def extended_pictographic() -> np.ndarray:
    """(TABLE_SIZE,) uint8: 1 for Extended_Pictographic characters (emoji), else 0."""
    table = _decode_runs("EXTENDED_PICTOGRAPHIC").copy()
    table[INVALID] = 0
    return table


@functools.cache
def syllable_final() -> np.ndarray:
    """(TABLE_SIZE,) uint8: 1 for marks that end a syllable's cluster in practice (tone marks,
    anusvara, visarga, killers: Indic_Syllabic_Category), else 0."""
    table = _decode_runs("SYLLABLE_FINAL").copy()
    table[INVALID] = 0
    return table


@functools.cache
def linker() -> np.ndarray:
    """(TABLE_SIZE,) uint8: 1 for viramas and invisible stackers, which join the consonant
    after them into one cluster (Indic_Syllabic_Category Virama, Invisible_Stacker)."""
    table = _decode_runs("LINKER").copy()
    table[INVALID] = 0
    return table


class CharTable:
    """A classification of characters for one family of splitting rules.

    ``table[cp]`` is the class (uint8) of code point ``cp``; ``table[INVALID]`` is the class of an
    invalid byte. Splitters declare the table they read, so that a stack of splitters decodes each
    document once and the streaming automaton can be compiled over a handful of classes instead of
    1.1 million code points. Build tables once (module-level cache): identity matters, because
    stacks whose splitters share one table skip the work of combining tables.
    """

    def __init__(self, name: str, table: np.ndarray, class_names: tuple[str, ...]) -> None:
        table = np.asarray(table, dtype=np.uint8)
        if table.shape != (TABLE_SIZE,):
            raise ValueError(f"CharTable {name!r}: table must have shape ({TABLE_SIZE},), got {table.shape}")
        if int(table.max()) >= len(class_names):
            raise ValueError(
                f"CharTable {name!r}: class {int(table.max())} has no name; {len(class_names)} names given"
            )
        table.flags.writeable = False
        self.name = name
        self.table = table
        self.class_names = class_names

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @functools.cached_property
    def lookup(self) -> bytes:
        """The table as ``bytes``: indexing it from Python is ten times faster than numpy."""
        return self.table.tobytes()

    @functools.cached_property
    def byte_lookup(self) -> bytes:
        """The classes of code points 0..255, for ``bytes.translate`` over ASCII bytes."""
        return self.table[:256].tobytes()

    def __repr__(self) -> str:
        return f"CharTable({self.name!r}, {self.n_classes} classes)"


@functools.cache
def any_character() -> CharTable:
    """One class for every character: for rules that read only how many characters there are
    (MEGABYTE's fixed patches) or none of their classes (a splitter that reads bytes through a
    model, ``aunet.core.splitter.ModelSplitter``)."""
    return CharTable("any", np.zeros(TABLE_SIZE, dtype=np.uint8), ("character",))


# Sequence length announced by a lead byte; 0 for continuation bytes and bytes that never occur
# in valid UTF-8 (C0, C1, F5..FF), 1 for ASCII.
_LEAD_LENGTH = np.zeros(256, dtype=np.int8)
_LEAD_LENGTH[:0x80] = 1
_LEAD_LENGTH[0xC2:0xE0] = 2
_LEAD_LENGTH[0xE0:0xF0] = 3
_LEAD_LENGTH[0xF0:0xF5] = 4
# Valid range of the byte after each lead (Unicode table 3-7: no overlongs, no surrogates,
# nothing above U+10FFFF).
_SECOND_LO = np.full(256, 0x80, dtype=np.uint8)
_SECOND_HI = np.full(256, 0xBF, dtype=np.uint8)
_SECOND_LO[0xE0], _SECOND_HI[0xED] = 0xA0, 0x9F
_SECOND_LO[0xF0], _SECOND_HI[0xF4] = 0x90, 0x8F
_LEAD_BITS = np.array([0, 0x7F, 0x1F, 0x0F, 0x07], dtype=np.int32)

LEAD_LENGTH: tuple[int, ...] = tuple(int(x) for x in _LEAD_LENGTH)
SECOND_RANGE: tuple[tuple[int, int], ...] = tuple((int(lo), int(hi)) for lo, hi in zip(_SECOND_LO, _SECOND_HI))


class Chars:
    """One document decoded into characters; shared by the splitters of a stack.

    Only ``data`` and a few sparse arrays are computed up front; the (M,) arrays are built when a
    splitter first asks for them, and at most once (M characters, T bytes).

    Attributes:
        data: (T,) uint8, the document.
        n_chars: M.
        keep: (T,) bool, which bytes are the last byte of a character; None when every byte is
            a character (no valid multi-byte character), so character i is byte i.
        multi: (C,) int64 character index of each valid multi-byte character, and ``multi_cp``
            (C,) int32 its code point, ``multi_len`` (C,) its length in bytes.
        invalid: int64 character indices of invalid bytes (code point ``INVALID``).
        unmarkable: int64 character indices that may not be boundaries (rule 3 of the module
            docstring); usually empty.
    """

    __slots__ = ("_memo", "data", "invalid", "keep", "multi", "multi_cp", "multi_len", "n_chars", "unmarkable")

    def __init__(
        self,
        data: np.ndarray,
        keep: np.ndarray | None,
        multi: np.ndarray,
        multi_cp: np.ndarray,
        multi_len: np.ndarray,
        invalid: np.ndarray,
        unmarkable: np.ndarray,
    ) -> None:
        self.data = data
        self.keep = keep
        self.n_chars = len(data) if keep is None else len(data) - int(multi_len.sum() - len(multi_len))
        self.multi = multi
        self.multi_cp = multi_cp
        self.multi_len = multi_len
        self.invalid = invalid
        self.unmarkable = unmarkable
        self._memo: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return self.n_chars

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """Compute a derived array once per document: splitters of one family share analyses
        (the three word splitters share one word analysis) through this."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute()
            return value

    def classes(self, table: CharTable) -> np.ndarray:
        """(M,) uint8: the class of every character under ``table`` (computed once per table)."""
        return self.memo(("classes", id(table)), lambda: self._classes(table))

    def _classes(self, table: CharTable) -> np.ndarray:
        # bytes.translate is a C loop over a 256-entry table: the class of every ASCII byte in
        # one pass. Bytes >= 0x80 get a placeholder that is dropped (inner bytes of a character)
        # or overwritten below.
        by_byte = np.frombuffer(self.data.tobytes().translate(table.byte_lookup), dtype=np.uint8)
        cls = by_byte[self.keep] if self.keep is not None else by_byte.copy()
        cls[self.multi] = table.table[self.multi_cp]
        cls[self.invalid] = table.table[INVALID]
        return cls

    @property
    def cp(self) -> np.ndarray:
        """(M,) int32 code point of each character, ``INVALID`` for an invalid byte."""

        def compute() -> np.ndarray:
            data = self.data if self.keep is None else self.data[self.keep]
            cp = data.astype(np.int32)
            cp[self.multi] = self.multi_cp
            cp[self.invalid] = INVALID
            return cp

        return self.memo("cp", compute)

    @property
    def nbytes(self) -> np.ndarray:
        """(M,) uint8 length of each character in bytes."""

        def compute() -> np.ndarray:
            nbytes = np.ones(self.n_chars, dtype=np.uint8)
            nbytes[self.multi] = self.multi_len
            return nbytes

        return self.memo("nbytes", compute)

    @property
    def ends(self) -> np.ndarray:
        """(M,) int64 index of each character's last byte."""
        return self.memo("ends", lambda: np.arange(self.n_chars) if self.keep is None else np.flatnonzero(self.keep))

    def to_bytes(self, per_char: np.ndarray) -> np.ndarray:
        """Spread a (M,) uint8 per-character array onto bytes: (T,), 0 on inner bytes."""
        if self.keep is None:
            return per_char
        out = np.zeros(len(self.data), dtype=per_char.dtype)
        out[self.keep] = per_char
        return out


def as_bytes_array(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A (T,) uint8 view of ``data`` (no copy for bytes-like input)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise TypeError(f"expected a 1-D uint8 array of bytes, got {data.dtype} with shape {data.shape}")
        return data
    if isinstance(data, str):
        raise TypeError("expected bytes, got str: encode text first, e.g. text.encode('utf-8')")
    return np.frombuffer(data, dtype=np.uint8)


_EMPTY = np.empty(0, dtype=np.int64)


def decode(data: bytes | bytearray | memoryview | np.ndarray) -> Chars:
    """Decode one document into characters, vectorized. Never raises on any bytes.

    Valid UTF-8 (nearly all real text) goes through Python's own decoder, which is C and leaves
    a handful of numpy passes: this keeps short documents cheap. Anything else takes
    ``decode_any_bytes``.
    """
    b = as_bytes_array(data)
    raw = data if isinstance(data, bytes) else b.tobytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return decode_any_bytes(b)
    if len(text) == len(raw):  # ASCII
        return Chars(b, None, _EMPTY, np.empty(0, np.int32), _EMPTY, _EMPTY, _EMPTY)
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.int32)  # (M,)
    multi = np.flatnonzero(cp >= 0x80)
    multi_cp = cp[multi]
    multi_len = 2 + (multi_cp >= 0x800).astype(np.int64) + (multi_cp >= 0x10000)
    keep = np.empty(len(b), dtype=bool)  # a byte ends a character when the next one starts one
    np.not_equal(b[1:] & 0xC0, 0x80, out=keep[:-1])
    keep[-1] = True
    return Chars(b, keep, multi, multi_cp, multi_len, _EMPTY, _EMPTY)


def decode_any_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> Chars:
    """``decode`` for any bytes, valid UTF-8 or not.

    Only bytes >= 0x80 take part in multi-byte sequences, so the UTF-8 analysis runs on that
    subset (about 1% of English text); the full passes are one comparison and one nonzero.
    """
    b = as_bytes_array(data)
    n = len(b)
    high = np.flatnonzero(b >= 0x80)  # (H,) positions of non-ASCII bytes
    if len(high) == 0:
        return Chars(b, None, _EMPTY, np.empty(0, np.int32), _EMPTY, _EMPTY, _EMPTY)

    padded = np.concatenate([b[high[0] :], np.zeros(3, dtype=np.uint8)])  # reads past the end see 0x00
    rel = high - high[0]
    lead = b[high]
    lead_len = _LEAD_LENGTH[lead].astype(np.int64)  # (H,)
    second = padded[rel + 1]
    ok2 = (lead_len >= 2) & (second >= _SECOND_LO[lead]) & (second <= _SECOND_HI[lead])
    ok3 = ok2 & (lead_len >= 3) & ((padded[rel + 2] & 0xC0) == 0x80)
    ok4 = ok3 & (lead_len >= 4) & ((padded[rel + 3] & 0xC0) == 0x80)
    valid_prefix = 1 + ok2.astype(np.int64) + ok3 + ok4  # bytes that fit a valid sequence so far
    complete = (lead_len >= 2) & (valid_prefix == lead_len)

    starts = high[complete]  # (C,) first byte of each valid multi-byte character
    lengths = lead_len[complete]
    value = (b[starts].astype(np.int32) & _LEAD_BITS[lengths]).astype(np.int32)
    for k in range(1, 4):
        more = lengths > k
        value = np.where(more, (value << 6) | (padded[starts - high[0] + k] & 0x3F), value)

    # Bytes inside a valid character other than its last byte are not characters.
    inner = np.sort(np.concatenate([starts[lengths - 1 > k] + k for k in range(3)]))
    keep = None
    if len(inner):
        keep = np.ones(n, dtype=bool)
        keep[inner] = False

    def char_index(positions: np.ndarray) -> np.ndarray:
        """Character index of the character whose last byte is at each (sorted) position."""
        return positions - np.searchsorted(inner, positions)

    in_valid = np.zeros(len(high), dtype=bool)
    for k in range(4):
        in_valid[np.searchsorted(high, starts[lengths > k] + k)] = True
    invalid = char_index(high[~in_valid])
    # Rule 3: truncated sequences (a lead byte and the continuation bytes that still fitted).
    broken = (lead_len >= 2) & ~complete
    broken_at, broken_len = high[broken], valid_prefix[broken]
    pending = np.sort(np.concatenate([broken_at[broken_len > k] + k for k in range(3)]))
    return Chars(b, keep, char_index(starts + lengths - 1), value, lengths, invalid, char_index(pending))
