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

Modules: the character classes and the rules' constants are in ``script_table``; the streaming
machine (``ScriptSplitter.step``) and the splitters are here; the vectorized form that
``ScriptSplitter.marks`` runs (rules 1 to 4 in ``analyse``, rule 5 in ``cap_cuts``) is in
``script_batch``. Every name this module had is still importable from it.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from aunet.core.splitter import Splitter
from aunet.core.text import Chars, CharTable
from aunet.core.validators import between
from aunet.splitters.script_batch import ScriptAnalysis, analyse, cap_cuts, greedy_cuts
from aunet.splitters.script_table import (
    CAP_ANY,
    CAP_ANY_MARKED,
    CAP_FINAL,
    CAP_MARK,
    CAP_MARK_MARKED,
    CJK,
    CJK_EXTRA,
    CJK_SCRIPTS,
    CLASS_NAMES,
    CLUSTER_BASE,
    DIGIT,
    FINAL,
    GROUP,
    JAMO_L,
    JAMO_VT,
    LETTER,
    LETTER_M,
    LETTERS,
    LINKER,
    MARK,
    MARKED_SCRIPTS,
    MAX_LETTER,
    NEWLINE,
    PREPEND,
    RI,
    SEA,
    SEA_ANY,
    SEA_END,
    SEA_FINAL_VOWELS,
    SEA_MARK,
    SEA_SCRIPTS,
    SEPARATORS,
    SPACE,
    START,
    SYMBOL,
    ZWJ,
    script_classes,
)
from aunet.splitters.words import MAX_UNITS

# -- the machine ----------------------------------------------------------------------------------

# Join states: what the previous character requires of the next one.
J_NONE, J_LINK, J_ZWJ, J_PREPEND, J_JAMO_L, J_JAMO_VT, J_RI = range(7)
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
            base = CLUSTER_BASE.get(k, k)
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


#: What this module offers, as it did before the character classes and the vectorized form moved
#: to ``script_table`` and ``script_batch``.
__all__ = [
    "CAP_ANY",
    "CAP_ANY_MARKED",
    "CAP_FINAL",
    "CAP_MARK",
    "CAP_MARK_MARKED",
    "CJK",
    "CJK_EXTRA",
    "CJK_SCRIPTS",
    "CLASS_NAMES",
    "CLUSTER_BASE",
    "DIGIT",
    "FINAL",
    "GROUP",
    "JAMO_L",
    "JAMO_VT",
    "LETTER",
    "LETTERS",
    "LETTER_M",
    "LINKER",
    "MARK",
    "MARKED_SCRIPTS",
    "MAX_LETTER",
    "NEWLINE",
    "PREPEND",
    "RI",
    "SEA",
    "SEA_ANY",
    "SEA_END",
    "SEA_FINAL_VOWELS",
    "SEA_MARK",
    "SEA_SCRIPTS",
    "SEPARATORS",
    "SPACE",
    "START",
    "SYMBOL",
    "ZWJ",
    "Script",
    "ScriptAnalysis",
    "ScriptFour",
    "ScriptPair",
    "ScriptSplitter",
    "analyse",
    "cap_cuts",
    "greedy_cuts",
    "joins_previous",
    "script_classes",
]
