"""The script-aware splitters: ``script``, ``script-pair``, ``script-4`` (and ``script-n``).

The paper's word rules assume spaces between words. Measured on the UDHR texts they give Chinese
30 bytes per level-1 segment, Japanese 31, Thai 14, Amharic 14 (its words are separated by ``፡``,
not spaces), Russian 12 with 29% of segments over 16 bytes (where the 16 upsampling offsets wrap),
and they treat combining marks as punctuation, cutting Devanagari, Thai or vowelled Arabic words
apart. These splitters keep the word rules where they work and give every other script units of
sensible size, without a dictionary, with the same guarantees (total, prefix-stable, nested, UTF-8
safe, vectorized, streaming).

Rules, on the characters of one document (a boundary at a character is on its last byte):

1. **Clusters.** A character *joins* the cluster before it, as in Unicode's grapheme clusters
   (UAX #29), when it is a combining mark, a virama or a ZWJ (not after a line break); when it
   follows a prepended character or a ZWJ (unless it is whitespace); when it is a letter after a
   virama (a conjunct: the GB9c rule of Unicode 15.1); a Hangul jamo continuing a syllable; or the
   second regional indicator of a flag. Rules 2 to 5 see clusters, classified by their first
   character: combining marks are never punctuation, and a virama sequence is never cut.
2. **Word ends**, as the word rules: whitespace after a non-whitespace cluster ends a *unit*. The
   Tibetan tsheg ``་`` and the Ethiopic wordspace ``፡`` count as whitespace.
3. **Starts**, as the word rules, at every level: the first cluster of each piece of at most 3 in
   a run of digit clusters or of symbol clusters, line breaks after a symbol run swallowed by it,
   and the first free line break of a whitespace run. Emoji and other pictographs, and flags, are
   words rather than symbols.
4. **Scripts without spaces.** A run of Han, kana, Bopomofo or Yi characters ends a unit at the
   first character that brings it to ``unit_bytes`` (4) bytes: every second character (6 bytes),
   about a word of modern Chinese, and about the bytes of an English word, so the deep stages
   cost per byte what they cost on English (``unit_bytes = 1``: a unit per character, which
   makes the trunk run once per 3 bytes). Thai, Lao, Khmer, Myanmar and the other Southeast Asian
   scripts written without spaces end a unit once it holds ``unit_bytes`` bytes at a character
   where the syllable's cluster is over as far as writing conventions go: a syllable-final mark
   (a tone mark, anusvara, visarga, killer: Unicode's Indic_Syllabic_Category) or a following
   vowel letter (Thai and Lao ะ า ำ ๅ); from ``unit_bytes + 1`` at a combining mark; from
   ``unit_bytes + 3`` at the first character of any cluster (in practice: the next character;
   Thai characters are 3 bytes). Lengths count from the last unit end or start, and afresh from
   the first character of a new script group (spaced, Southeast Asian, CJK), so a word of a
   spaced script after a CJK or Thai run stays whole.
5. **Length cap** (the level-1 splitter only). In spaced scripts that write few marks (Latin,
   Cyrillic, Greek, Armenian, Georgian, Hangul...), a level-1 segment is cut at a character after
   which nothing must join once it holds ``max_bytes + 1 - w`` bytes, w being the widest letter
   cluster (up to 4 bytes) the document has shown so far: the last point after which another
   letter of that width would not fit. So a word that fits in ``max_bytes`` (16) with the space
   that ends it is never cut, and English (w = 1) is the word rules for every word of up to 15
   letters (the reference's rules keep letter runs of up to 16 whole; no prefix-stable rule can
   keep a 16-byte word whole and its segments within 16 bytes, since a word's end is known only
   after its next byte). The document-wide w is what keeps Russian (2) or polytonic Greek (3)
   within the cap: a word's own widest letter so far would let a wide letter late in a word
   overflow. In other
   scripts a level-1 segment is cut once it holds ``max_bytes - 10`` (6) bytes at a syllable-final
   mark, ``max_bytes - 6`` (10) at a combining mark and ``max_bytes - 3`` (13) at any character
   after which nothing must join. In scripts
   that write many marks (Indic, Arabic, Hebrew...) and Southeast Asian ones, whose long words
   would otherwise run past the cap inside a conjunct, a combining mark is a cut point from 6
   bytes on, and the first character of a cluster from 9. Segments so stay within ``max_bytes``
   (16, the number of upsampling offsets) unless a single cluster is longer or a run offers no cut
   point at all (a chain of ZWJs, say). Cuts are level-1 boundaries only: pairs and groups count
   units, not cuts.

Units chain as in the word rules (a new chain after extra whitespace); the ``n``-th splitter marks
every n-th unit of a chain and every start. All lengths are counted in bytes since the last unit end
or start (rule 4) or since the splitter's last boundary (rule 5), so every decision depends on the
bytes before it only: prefix-stable by construction.

Prefix stability has a price that no rule can avoid: whether a consonant's vowel signs follow it
is only known after it. Rules 4 and 5 prefer characters that end a cluster in practice, but a run
with none of them is cut at a consonant, and its marks then open the next segment. ``aunet split
--suite udhr`` reports, per language, the share of boundaries that fall inside a cluster.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import attrs
import numpy as np

from aunet.core.splitter import Splitter
from aunet.core.text import (
    CATEGORIES,
    GRAPHEME_BREAKS,
    INVALID,
    NEWLINES,
    SCRIPTS,
    TABLE_SIZE,
    WHITE_SPACE,
    Chars,
    CharTable,
    extended_pictographic,
    general_category,
    grapheme_break,
    linker,
    script,
    syllable_final,
)
from aunet.core.validators import between
from aunet.splitters.words import MAX_UNITS, run_offsets

# Character classes. The first eight are cluster bases; the rest join clusters (or start odd ones).
(
    LETTER,
    LETTER_M,
    CJK,
    SEA,
    SEA_END,
    DIGIT,
    SYMBOL,
    SPACE,
    NEWLINE,
    MARK,
    FINAL,
    LINKER,
    ZWJ,
    PREPEND,
    RI,
    JAMO_L,
    JAMO_VT,
) = range(17)
CLASS_NAMES = (
    "letter",
    "letter-with-marks",
    "cjk",
    "sea",
    "sea-final-vowel",
    "digit",
    "symbol",
    "space",
    "newline",
    "mark",
    "final-mark",
    "linker",
    "zwj",
    "prepend",
    "regional-indicator",
    "jamo-l",
    "jamo-vt",
)
START = 17  # "previous cluster" before the first character
LETTERS = (LETTER, LETTER_M, CJK, SEA, SEA_END)
# Letter groups for script changes: spaced scripts, Southeast Asian scripts, CJK.
GROUP = {LETTER: 1, LETTER_M: 1, SEA: 2, SEA_END: 2, CJK: 3}

#: Space-delimited scripts whose words carry many combining marks (the cap prefers cutting at them).
MARKED_SCRIPTS = frozenset(
    [
        "Devanagari",
        "Bengali",
        "Gurmukhi",
        "Gujarati",
        "Oriya",
        "Tamil",
        "Telugu",
        "Kannada",
        "Malayalam",
        "Sinhala",
        "Arabic",
        "Hebrew",
        "Syriac",
        "Thaana",
        "Nko",
        "Mongolian",
        "Limbu",
        "Lepcha",
        "Chakma",
        "Meetei_Mayek",
        "Saurashtra",
        "Syloti_Nagri",
        "Sundanese",
        "Batak",
        "Cham",
        "Kayah_Li",
        "Rejang",
        "Tagalog",
        "Hanunoo",
        "Buhid",
        "Tagbanwa",
        "Brahmi",
        "Kharoshthi",
        "Grantha",
        "Sharada",
        "Takri",
        "Tirhuta",
        "Modi",
        "Khojki",
        "Khudawadi",
        "Mahajani",
        "Kaithi",
        "Siddham",
        "Dogra",
        "Newa",
        "Bhaiksuki",
        "Marchen",
        "Masaram_Gondi",
        "Gunjala_Gondi",
        "Nandinagari",
        "Ahom",
        "Adlam",
        "Hanifi_Rohingya",
        "Mandaic",
        "Samaritan",
        "Tai_Viet",
    ]
)
#: Scripts written without spaces between words, whose units come from rule 4.
SEA_SCRIPTS = frozenset(
    ["Thai", "Lao", "Khmer", "Myanmar", "Tai_Tham", "New_Tai_Lue", "Tai_Le", "Balinese", "Javanese", "Buginese"]
)
#: Scripts whose every character is a unit.
CJK_SCRIPTS = frozenset(["Han", "Hiragana", "Katakana", "Bopomofo", "Yi", "Nushu", "Tangut", "Khitan_Small_Script"])
#: Letters that belong with CJK although their script is Common: ー (and its halfwidth form), 〆.
CJK_EXTRA = (0x30FC, 0xFF70, 0x3006)
#: Thai and Lao vowels written after the consonant as separate letters: a syllable's cluster is over.
SEA_FINAL_VOWELS = (0x0E30, 0x0E32, 0x0E33, 0x0E45, 0x0EB0, 0x0EB2, 0x0EB3)
#: Characters that separate words or syllables like a space: Tibetan tsheg, Ethiopic wordspace.
SEPARATORS = (0x0F0B, 0x0F0C, 0x1361)


#: Rule 4 thresholds, relative to ``unit_bytes``: a syllable-final mark or following vowel from
#: +0, a combining mark from +SEA_MARK, any cluster start from +SEA_ANY.
SEA_MARK, SEA_ANY = 1, 3
#: Rule 5 thresholds, relative to ``max_bytes``: syllable-final mark, combining mark, any character,
#: any character of a cluster whose script writes many marks (letter-with-marks, Southeast Asian).
CAP_FINAL, CAP_MARK, CAP_ANY, CAP_ANY_MARKED = 10, 6, 3, 7
#: Rule 5 threshold of a combining mark in scripts that write many marks (relative to max_bytes).
CAP_MARK_MARKED = 10
#: Rule 5 in spaced scripts: letter clusters are counted up to this many bytes wide.
MAX_LETTER = 4


@functools.cache
def script_classes() -> CharTable:
    """The class of every code point under the script rules."""
    gc_first = np.array([name[0] for name in CATEGORIES] + ["?"])[general_category()]
    scripts = np.array(list(SCRIPTS) + [""] * (256 - len(SCRIPTS)))[script()]
    gcb = np.array(list(GRAPHEME_BREAKS) + [""] * (256 - len(GRAPHEME_BREAKS)))[grapheme_break()]
    table = np.full(TABLE_SIZE, SYMBOL, dtype=np.uint8)
    table[gc_first == "N"] = DIGIT
    letters = gc_first == "L"
    table[letters] = LETTER
    table[letters & np.isin(scripts, list(MARKED_SCRIPTS))] = LETTER_M
    table[letters & np.isin(scripts, list(SEA_SCRIPTS))] = SEA
    table[letters & np.isin(scripts, list(CJK_SCRIPTS))] = CJK
    table[list(CJK_EXTRA)] = CJK
    # Emoji and other pictographic symbols are words here, not punctuation: "I ❤ you" has three
    # units, and a ZWJ sequence or a flag is never cut into symbol pieces.
    symbols = np.isin(np.array(list(CATEGORIES) + ["?"])[general_category()], ["So", "Sk"])
    table[(extended_pictographic() == 1) & symbols] = LETTER
    table[list(SEA_FINAL_VOWELS)] = SEA_END
    marks = (gcb == "Extend") | (gcb == "SpacingMark")
    table[marks] = MARK
    table[marks & (syllable_final() == 1)] = FINAL
    table[gcb == "ZWJ"] = ZWJ
    table[gcb == "Prepend"] = PREPEND
    table[gcb == "Regional_Indicator"] = RI
    table[gcb == "L"] = JAMO_L
    table[(gcb == "V") | (gcb == "T")] = JAMO_VT
    table[linker() == 1] = LINKER
    table[list(WHITE_SPACE) + list(SEPARATORS)] = SPACE
    table[list(NEWLINES)] = NEWLINE
    table[INVALID] = SYMBOL
    return CharTable("script", table, CLASS_NAMES)


# -- the machine ----------------------------------------------------------------------------------

# Join states: what the previous character requires of the next one.
J_NONE, J_LINK, J_ZWJ, J_PREPEND, J_JAMO_L, J_JAMO_VT, J_RI = range(7)
_BASE = {
    MARK: SYMBOL,
    FINAL: SYMBOL,
    LINKER: SYMBOL,
    ZWJ: SYMBOL,
    RI: LETTER,
    PREPEND: LETTER,
    JAMO_L: LETTER,
    JAMO_VT: LETTER,
}
_STARTS_JOIN = {LINKER: J_LINK, ZWJ: J_ZWJ, PREPEND: J_PREPEND, JAMO_L: J_JAMO_L, JAMO_VT: J_JAMO_VT, RI: J_RI}


def joins_previous(k: int, join: int, prev_base: int) -> bool:
    """Rule 1: whether a character of class ``k`` continues the cluster before it."""
    if k in (MARK, FINAL, LINKER, ZWJ):
        return prev_base not in (NEWLINE, START)
    if k in (SPACE, NEWLINE):
        return False
    if join in (J_ZWJ, J_PREPEND):
        return True
    if join == J_LINK:
        return k in LETTERS
    if join == J_JAMO_L:
        return k in (JAMO_L, JAMO_VT)
    if join == J_JAMO_VT:
        return k == JAMO_VT
    if join == J_RI:
        return k == RI
    return False


def _check_cap(instance: object, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 4:
        raise ValueError(f"must be at least 4 (a character can take 4 bytes), got {value}")
    if value is not None and value > 1 << 16:
        raise ValueError(f"must be at most 65,536, got {value:,}")


def _check_unit(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 64:
        raise ValueError(f"must be between 1 and 64, got {value}")


@attrs.frozen(kw_only=True)
class ScriptSplitter(Splitter):
    """Every n-th script-aware unit of a chain, plus starts and an optional length cap.

    Units: word ends where words are spaced, two CJK characters, short ones for other scripts
    without spaces (rules 1 to 5 of the module docstring)."""

    kind: ClassVar[str] = "script-n"
    n: int = attrs.field(default=1, validator=between(1, MAX_UNITS, why="2^16 units per segment"))
    """Units per segment: 1 is ``script``, 2 ``script-pair``, 4 ``script-4``."""
    max_bytes: int | None = attrs.field(default=None, validator=_check_cap)
    """Cut level-1 segments so they stay within this many bytes (rule 5; None: no cap)."""
    unit_bytes: int = attrs.field(default=4, validator=_check_unit)
    """Bytes a unit of a script without spaces should reach before it ends (rule 4)."""

    @property
    def granularity(self) -> int:  # type: ignore[override]
        return self.n

    def char_table(self) -> CharTable:
        return script_classes()

    # State: (prev_base, join, run, swallow, marked, chain, broken, after_end, unit_len, seg_len,
    #         cluster bytes so far (up to 4), the widest spaced-letter cluster since the last fixed mark)
    def start(self) -> tuple:
        return (START, J_NONE, 0, False, False, 0, True, False, 0, 0, 0, 0)

    def step(self, state: tuple, k: int, nbytes: int) -> tuple[tuple, bool]:
        prev_base, join, run, swallow, marked, chain, broken, after_end, unit_len, seg_len, cluster, wide = state
        u = self.unit_bytes
        joins = joins_previous(k, join, prev_base)
        plain = joins and k in (MARK, FINAL) and join == J_NONE  # a mark right on its base
        whitespace = k in (SPACE, NEWLINE)
        if after_end and whitespace:
            broken = True  # extra whitespace after a unit end: the next unit starts a chain
        unit_end = start = changed = False
        if joins:
            base = prev_base
            if k == RI:  # an opening indicator waits for its pair; a closing one completes it
                join = J_RI if join != J_RI else J_NONE
            elif k in _STARTS_JOIN:
                join = _STARTS_JOIN[k]
            elif k in (MARK, FINAL) and join == J_LINK:
                join = J_LINK
            else:
                join = J_NONE
        else:
            base = _BASE.get(k, k)
            join = _STARTS_JOIN.get(k, J_NONE)
            if whitespace:
                unit_end = prev_base not in (SPACE, NEWLINE, START)
                if k == NEWLINE and not swallow and not marked:
                    start = marked = True
                swallow = swallow and k == NEWLINE
                run = 0
            else:
                marked = False
                run = (run + 1) % 3 if base == prev_base and base in (DIGIT, SYMBOL) else 0
                start = base in (DIGIT, SYMBOL) and run == 0
                swallow = base == SYMBOL
                changed = base in GROUP and prev_base in GROUP and GROUP[base] != GROUP[prev_base]
        ul = min((0 if changed else unit_len) + nbytes, u + SEA_ANY)  # a new script counts afresh
        if not (unit_end or start) and base == CJK:  # rule 4, CJK
            unit_end = not joins and ul >= u
        elif not (unit_end or start) and base in (SEA, SEA_END):  # rule 4, Southeast Asian
            if (k == SEA_END and not joins) or (k == FINAL and plain):
                unit_end = ul >= u
            elif k == MARK and plain:
                unit_end = ul >= u + SEA_MARK
            elif not joins:
                unit_end = ul >= u + SEA_ANY
        mark = start
        if unit_end:
            index = 0 if broken else chain
            chain = (index + 1) % self.n
            broken = False
            mark = mark or chain == 0
        if self.max_bytes is not None:  # rule 5's widths (uncapped splitters keep fewer states)
            cluster = min((cluster if joins else 0) + nbytes, MAX_LETTER)
            wide = max(wide, cluster) if base == LETTER else wide
        sl = 0
        if self.max_bytes is not None:  # rule 5
            c = self.max_bytes
            sl = min(seg_len + nbytes, c)
            if not mark and base == LETTER:  # a spaced script: cut only where no other letter fits
                mark = join == J_NONE and sl >= c + 1 - wide
            elif not mark:
                marked_script = base in (LETTER_M, SEA, SEA_END)
                mark_threshold = c - (CAP_MARK_MARKED if marked_script else CAP_MARK)
                if (
                    (k == FINAL and plain and sl >= c - CAP_FINAL)
                    or (k == MARK and plain and sl >= mark_threshold)
                    or join == J_NONE
                    and (sl >= c - CAP_ANY or (marked_script and not joins and sl >= c - CAP_ANY_MARKED))
                ):
                    mark = True
            if mark:
                sl = 0
        unit_len = 0 if (unit_end or start) else ul
        return (base, join, run, swallow, marked, chain, broken, unit_end, unit_len, sl, cluster, wide), mark

    # -- the batch form ----------------------------------------------------------------------------

    def marks(self, chars: Chars) -> np.ndarray:
        rules = chars.memo(("script", self.unit_bytes), lambda: analyse(chars, self.unit_bytes))
        n = self.n
        ends = rules.unit_ends if n == 1 else rules.unit_ends[(rules.chain_index + 1) % n == 0]
        marked = np.concatenate([ends, rules.starts])
        if self.max_bytes is not None:
            marked = np.concatenate([marked, cap_cuts(rules, np.sort(marked), self.max_bytes)])
        return marked


@attrs.frozen(kw_only=True)
class Script(ScriptSplitter):
    """Script-aware units for level 1, capped at 16 bytes.

    Word ends where words are spaced, units of two CJK characters, short units for Thai, Khmer,
    Myanmar and other scripts without spaces; combining marks stay with their letters."""

    kind: ClassVar[str] = "script"
    n: int = attrs.field(default=1, init=False)
    max_bytes: int | None = attrs.field(default=16, validator=_check_cap)
    """Cut segments so they stay within this many bytes (the number of upsampling offsets)."""


@attrs.frozen(kw_only=True)
class ScriptPair(ScriptSplitter):
    """Every second script-aware unit of a chain (the ``word-pair`` of any script)."""

    kind: ClassVar[str] = "script-pair"
    n: int = attrs.field(default=2, init=False)


@attrs.frozen(kw_only=True)
class ScriptFour(ScriptSplitter):
    """Every fourth script-aware unit of a chain (the ``4-word`` of any script)."""

    kind: ClassVar[str] = "script-4"
    n: int = attrs.field(default=4, init=False)


# -- vectorized analysis ----------------------------------------------------------------------------


@attrs.frozen
class ScriptAnalysis:
    """What the script splitters of one document share."""

    unit_ends: np.ndarray  # (U,) sorted character indices of unit ends
    chain_index: np.ndarray  # (U,) position of each unit in its chain
    starts: np.ndarray  # character indices of starts (every level)
    cum: np.ndarray  # (M,) bytes up to and including each character
    cap_first: np.ndarray  # (F,) plain syllable-final marks: cap candidates from max_bytes - CAP_FINAL
    cap_mark: np.ndarray  # plain marks: cap candidates from max_bytes - CAP_MARK
    cap_mark_marked: np.ndarray  # the same in clusters of scripts with many marks (- CAP_MARK_MARKED)
    cap_any: np.ndarray  # (M,) bool: characters after which nothing must join (from max_bytes - CAP_ANY)
    cap_any_marked: np.ndarray  # such characters of scripts with many marks that start a cluster (- CAP_ANY_MARKED)
    cap_letter: np.ndarray  # (M,) bool: characters of spaced scripts after which nothing must join
    letter_width: np.ndarray  # (M,) int64: bytes of the cluster so far (up to 4) where spaced, else 0


def _is(*classes: int) -> np.ndarray:
    """A lookup over class numbers (faster than np.isin on every call): ``_is(A, B)[k]``."""
    table = np.zeros(START + 1, dtype=bool)
    table[list(classes)] = True
    return table


_MARKISH = _is(MARK, FINAL, LINKER, ZWJ)
_MARKS = _is(MARK, FINAL)
_LETTERS = _is(*LETTERS)
_ZWJ_PREPEND = _is(ZWJ, PREPEND)
_JAMO_ANY = _is(JAMO_L, JAMO_VT)
_REQUIRES = _is(ZWJ, PREPEND, JAMO_L, JAMO_VT)
_LEAVES = _is(LINKER, ZWJ, PREPEND, JAMO_L, JAMO_VT)
_SEA_BASES = _is(SEA, SEA_END)
_MARKED_BASES = _is(LETTER_M, SEA, SEA_END)
_WHITESPACE = _is(SPACE, NEWLINE)


def _last_true_before(mask: np.ndarray) -> np.ndarray:
    """For each i, the largest j < i with mask[j] (or -1)."""
    idx = np.where(mask, np.arange(len(mask)), -1)
    out = np.empty(len(mask), dtype=np.int64)
    if len(mask):
        out[0] = -1
        out[1:] = np.maximum.accumulate(idx)[:-1]
    return out


def greedy_cuts(
    cum: np.ndarray, stretch_start: np.ndarray, stretch_end: np.ndarray, tiers: list[tuple[np.ndarray, int]]
) -> np.ndarray:
    """Cuts placed greedily: from a reset after position r (r = -1 for the document start), the
    next cut is the first candidate q of any tier with bytes(r+1..q) >= the tier's threshold,
    provided q is before the stretch's end (the next fixed reset). Each stretch is
    (stretch_start[i] = r, stretch_end[i] = e); all stretches advance together, one cut per
    round, so the Python loop runs once per cut of the longest stretch, not per byte. A tier's
    candidates are sorted positions, or a (M,) bool mask when they are most characters."""
    m = len(cum)
    # A threshold below 1 byte means "at once": every character has a byte, so 1 is the same and
    # keeps each round moving forward.
    tiers = [(c, max(1, t)) for c, t in tiers if (c.any() if c.dtype == bool else len(c))]
    if not tiers or m == 0:
        return np.empty(0, dtype=np.int64)
    r, e = stretch_start.astype(np.int64), stretch_end.astype(np.int64)
    # Only stretches long enough to reach the smallest threshold can hold a cut (most cannot:
    # a word is shorter than the cap), so the rounds below start from the few that can.
    shortest = min(t for _, t in tiers)
    span = cum[np.maximum(e - 1, 0)] - np.where(r >= 0, cum[np.maximum(r, 0)], 0)
    keep = (e - 1 > r) & (span >= shortest)
    r, e = r[keep], e[keep]
    if len(r) == 0:
        return np.empty(0, dtype=np.int64)
    lookups = []
    for candidates, threshold in tiers:
        if candidates.dtype == bool:  # a mask: searched around each query (non-candidates are rare)
            lookups.append((None, candidates, threshold))
        else:
            lookups.append((cum[candidates], candidates, threshold))
    never = np.iinfo(np.int64).max
    found = []
    while len(r):
        base = np.where(r >= 0, cum[np.maximum(r, 0)], 0)
        nxt = np.full(len(r), never)
        for values, where, threshold in lookups:
            if values is None:  # a mask: first position reaching the threshold, then the next candidate
                q = _next_true(where, np.searchsorted(cum, base + threshold, side="left"))
                nxt = np.minimum(nxt, np.where(q < m, q, never))
            else:
                k = np.searchsorted(values, base + threshold, side="left")
                nxt = np.minimum(nxt, np.where(k < len(where), where[np.minimum(k, len(where) - 1)], never))
        keep = nxt < e
        r, e = nxt[keep], e[keep]
        found.append(r)
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def _next_true(mask: np.ndarray, start: np.ndarray) -> np.ndarray:
    """For each start position, the first position at or after it where ``mask`` holds (len(mask)
    if none). Steps a few positions at once (runs of False are short where this is used), and
    falls back to a full scan for the rest."""
    m = len(mask)
    q = start.copy()
    for _ in range(16):
        pending = q < m
        pending[pending] = ~mask[q[pending]]
        if not pending.any():
            return q
        q[pending] += 1
    following = np.where(mask, np.arange(m), m)
    following = np.append(np.minimum.accumulate(following[::-1])[::-1], m)
    return following[np.minimum(q, m)]


def _lut(table: np.ndarray, codes: bytes) -> np.ndarray:
    """``table[k]`` for the class codes of a document, through ``bytes.translate`` (one C pass
    over bytes instead of numpy's fancy indexing with a widened index array)."""
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[: len(table)] = table
    out = np.frombuffer(codes.translate(lookup.tobytes()), dtype=np.uint8)
    return out.view(bool) if table.dtype == bool else out


_SPECIAL = _is(MARK, FINAL, LINKER, ZWJ, PREPEND, RI, JAMO_L, JAMO_VT)
_FIRST_CLASS = np.arange(START + 1, dtype=np.uint8)
for _cls, _base in _BASE.items():
    _FIRST_CLASS[_cls] = _base
_GROUP_OF = np.zeros(START + 1, dtype=np.uint8)
for _cls, _g in GROUP.items():
    _GROUP_OF[_cls] = _g


def analyse(chars: Chars, unit_bytes: int) -> ScriptAnalysis:
    """Rules 1 to 4 on a whole document, vectorized (rule 5 is ``cap_cuts``)."""
    k = chars.classes(script_classes())  # (M,) uint8
    m = len(k)
    codes = k.tobytes()
    cum = np.cumsum(chars.nbytes, dtype=np.int64)  # (M,) bytes up to and including each character
    whitespace = _lut(_WHITESPACE, codes)
    prev = np.empty(m, dtype=np.uint8)  # class of the previous character (START before the first)
    if m:
        prev[0] = START
        prev[1:] = k[:-1]

    # Rule 1: which characters join the cluster before them, and the join state each leaves.
    if m and _lut(_SPECIAL, codes).any():
        markish = _lut(_MARKISH, codes)
        marks = _lut(_MARKS, codes)
        last_nonmark = _last_true_before(~marks)  # index or -1
        linked = (last_nonmark >= 0) & (k[np.maximum(last_nonmark, 0)] == LINKER)
        ri = np.flatnonzero(k == RI)
        ri_first = np.zeros(m, dtype=bool)  # a regional indicator that opens a pair
        ri_first[ri[run_offsets(ri) % 2 == 0]] = True
        pcodes = prev.tobytes()
        joins = np.zeros(m, dtype=bool)
        joins[1:] = (
            (markish[1:] & (prev[1:] != NEWLINE))
            | (~whitespace[1:] & _lut(_ZWJ_PREPEND, pcodes)[1:])
            | (linked[1:] & _lut(_LETTERS, codes)[1:])
            | ((prev[1:] == JAMO_L) & _lut(_JAMO_ANY, codes)[1:])
            | ((prev[1:] == JAMO_VT) & (k[1:] == JAMO_VT))
            | (ri_first[:-1] & (k[1:] == RI))
        )
        # A mark is "plain" when the previous character leaves no requirement: not after a
        # linker (or marks after one), a ZWJ, a prepend, a jamo or an opening regional indicator.
        prev_requires = np.zeros(m, dtype=bool)
        prev_requires[1:] = linked[1:] | _lut(_REQUIRES, pcodes)[1:] | ri_first[:-1]
        plain = joins & marks & ~prev_requires
        # Characters after which the next one must join may not be cut at.
        leaves_join = _lut(_LEAVES, codes) | ri_first | (marks & joins & linked)
        starts_cluster = ~joins
        cluster_id = np.cumsum(starts_cluster) - 1
        base = _lut(_FIRST_CLASS, codes)[starts_cluster][cluster_id]  # (M,) each character's cluster base
    else:  # no marks, joiners, flags or jamo: every character is its own cluster
        joins = plain = leaves_join = np.zeros(m, dtype=bool)
        starts_cluster = np.ones(m, dtype=bool)
        base = k
    prev_base = np.empty(m, dtype=np.uint8)
    if m:
        prev_base[0] = START
        prev_base[1:] = base[:-1]
    base_codes = base.tobytes()

    # Rule 2: whitespace after a non-whitespace cluster ends a unit.
    space_ends = starts_cluster & whitespace & ~_lut(_WHITESPACE, prev_base.tobytes())
    if m:
        space_ends[0] = False
    # Rule 3: starts, on cluster starts.
    c_pos = np.flatnonzero(starts_cluster)  # (C,) cluster starts
    c_base = base[c_pos]
    starts_list = []
    for cls in (DIGIT, SYMBOL):
        runs = np.flatnonzero(c_base == cls)  # indices into clusters
        starts_list.append(c_pos[runs[run_offsets(runs) % 3 == 0]])
    nl_clusters = np.flatnonzero(c_base == NEWLINE)
    nl_run_first = nl_clusters - run_offsets(nl_clusters)
    swallowed = (nl_run_first > 0) & (c_base[np.maximum(nl_run_first - 1, 0)] == SYMBOL)
    free = nl_clusters[~swallowed]
    # The first free line break of each whitespace run (runs of whitespace clusters).
    nonws_clusters = np.flatnonzero(~_WHITESPACE[c_base])
    before = np.searchsorted(nonws_clusters, free)
    first = np.ones(len(free), dtype=bool)
    first[1:] = before[1:] != before[:-1]
    starts_list.append(c_pos[free[first]])
    starts = np.sort(np.concatenate(starts_list))
    fixed = space_ends
    is_start = np.zeros(m, dtype=bool)
    is_start[starts] = True
    fixed_ends = np.flatnonzero(fixed)  # a line break may both end a unit and be a start
    # Rule 4, lengths: CJK and Southeast Asian units, greedy between the fixed resets (a change
    # of script group is a reset, so each stretch holds one group and only its tiers fire).
    sea = _lut(_SEA_BASES, base_codes)
    cjk = base == CJK
    length_cuts = np.empty(0, dtype=np.int64)
    if sea.any() or cjk.any():
        # A change of script group restarts the count at the new script's first character c
        # (a reset after c - 1 that is no unit end: a cut at c - 1 itself stays possible).
        group = _lut(_GROUP_OF, base_codes)
        change = np.zeros(m, dtype=bool)
        change[1:] = starts_cluster[1:] & (group[1:] > 0) & (group[:-1] > 0) & (group[1:] != group[:-1])
        restart = np.zeros(m, dtype=bool)
        restart[:-1] = change[1:]
        hard = fixed | is_start
        resets = np.flatnonzero(hard | restart)
        free = ~(hard | joins)  # cluster starts that no other rule decides
        sea_ctx = sea & ~(fixed | is_start)
        tiers = [
            (np.flatnonzero(cjk & free), unit_bytes),
            (np.flatnonzero(sea_ctx & (((k == SEA_END) & ~joins) | ((k == FINAL) & plain))), unit_bytes),
            (np.flatnonzero(sea_ctx & (k == MARK) & plain), unit_bytes + SEA_MARK),
            (np.flatnonzero(sea & free), unit_bytes + SEA_ANY),
        ]
        r = np.concatenate([[-1], resets])
        e = np.concatenate([resets + (restart & ~hard)[resets], [m]])
        length_cuts = greedy_cuts(cum, r, e, tiers)
    unit_ends = np.sort(np.concatenate([fixed_ends, length_cuts])) if len(length_cuts) else fixed_ends

    # Chains: a unit starts a new chain when the character after the previous unit end is
    # whitespace (extra whitespace), and at the document start.
    u = len(unit_ends)
    new_chain = np.ones(u, dtype=bool)
    if u > 1:
        after = unit_ends[:-1] + 1
        new_chain[1:] = whitespace[np.minimum(after, m - 1)] & (after < m)
    j = np.arange(u)
    chain_index = j - np.maximum.accumulate(np.where(new_chain, j, 0)) if u else j

    cuttable = ~leaves_join  # (M,) the character leaves nothing that the next one must join
    marked_script = _lut(_MARKED_BASES, base_codes)
    spaced = base == LETTER  # clusters of spaced scripts that write few marks: Latin, Cyrillic, Greek...
    cap_first = np.flatnonzero((k == FINAL) & plain & ~spaced)
    mark_plain = (k == MARK) & plain
    cap_mark = np.flatnonzero(mark_plain & ~marked_script & ~spaced)
    cap_mark_marked = np.flatnonzero(mark_plain & marked_script)
    cap_any_marked = np.flatnonzero(cuttable & marked_script & ~joins)  # (plain marks are cap_mark_marked)
    idx = np.arange(m)
    cluster_first = np.maximum.accumulate(np.where(joins, 0, idx)) if m else idx  # (M,)
    before = np.where(cluster_first > 0, cum[np.maximum(cluster_first - 1, 0)], 0)
    letter_width = np.where(spaced, np.minimum(cum - before, MAX_LETTER), 0)
    return ScriptAnalysis(
        unit_ends,
        chain_index,
        starts,
        cum,
        cap_first,
        cap_mark,
        cap_mark_marked,
        cuttable & ~spaced,
        cap_any_marked,
        cuttable & spaced,
        letter_width,
    )


def cap_cuts(rules: ScriptAnalysis, own_marks: np.ndarray, max_bytes: int) -> np.ndarray:
    """Rule 5: level-1 cuts between the splitter's own (sorted) boundaries."""
    m = len(rules.cum)
    r = np.concatenate([[-1], own_marks])
    e = np.concatenate([own_marks, [m]])
    tiers = [
        (rules.cap_first, max_bytes - CAP_FINAL),
        (rules.cap_mark, max_bytes - CAP_MARK),
        (rules.cap_mark_marked, max_bytes - CAP_MARK_MARKED),
        (rules.cap_any, max_bytes - CAP_ANY),
        (rules.cap_any_marked, max_bytes - CAP_ANY_MARKED),
    ]
    if rules.cap_letter.any():
        wide = np.maximum.accumulate(rules.letter_width)  # the widest letter cluster so far
        tiers += [(np.flatnonzero(rules.cap_letter & (wide == n)), max_bytes + 1 - n) for n in range(1, MAX_LETTER + 1)]
    return greedy_cuts(rules.cum, r, e, tiers)
