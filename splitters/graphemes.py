"""Extended grapheme clusters (UAX #29), as a reference to measure splitters against.

A plain per-character implementation of the cluster rules, with lookahead (a cluster break
between characters i and i+1 is decided knowing both). Splitters cannot use it (a splitter must
decide a byte's level from the bytes before it); tests and ``aunet split --suite`` use it to count
the boundaries that fall inside a cluster. ``conjuncts=True`` adds the Unicode 15.1 rule GB9c in
the form of this project's data: a virama (or invisible stacker) followed by a letter keeps them in
one cluster, as Indic conjuncts are; ``conjuncts=False`` is Unicode 15.0's rules exactly
(``GraphemeBreakTest.txt`` checks it).
"""

from __future__ import annotations

from aunet.core.text import (
    CATEGORIES,
    GRAPHEME_BREAKS,
    INVALID,
    decode,
    extended_pictographic,
    general_category,
    grapheme_break,
    linker,
)

_CR, _LF, _CONTROL, _EXTEND, _ZWJ, _RI, _PREPEND, _SPACING, _L, _V, _T, _LV, _LVT = (
    GRAPHEME_BREAKS.index(name)
    for name in (
        "CR",
        "LF",
        "Control",
        "Extend",
        "ZWJ",
        "Regional_Indicator",
        "Prepend",
        "SpacingMark",
        "L",
        "V",
        "T",
        "LV",
        "LVT",
    )
)
_LETTER_CATEGORIES = {i for i, name in enumerate(CATEGORIES) if name[0] == "L"}


def cluster_starts(code_points: list[int], *, conjuncts: bool = True) -> list[bool]:
    """For each character, whether a grapheme cluster starts there (the first always does)."""
    gcb, pict, link, gc = grapheme_break(), extended_pictographic(), linker(), general_category()
    props = [int(gcb[cp]) if cp != INVALID else _CONTROL for cp in code_points]
    out = []
    ri_run = 0  # regional indicators in a row before this character
    pict_zwj = False  # Extended_Pictographic Extend* ZWJ just before this character
    after_pict = False  # Extended_Pictographic Extend* so far
    linked = False  # a virama, possibly followed by extenders, just before this character
    for i, (cp, p) in enumerate(zip(code_points, props)):
        if i == 0:
            out.append(True)
        else:
            prev = props[i - 1]
            if prev == _CR and p == _LF:
                brk = False  # GB3
            elif prev in (_CR, _LF, _CONTROL) or p in (_CR, _LF, _CONTROL):
                brk = True  # GB4, GB5
            elif prev == _L and p in (_L, _V, _LV, _LVT):
                brk = False  # GB6
            elif prev in (_LV, _V) and p in (_V, _T):
                brk = False  # GB7
            elif prev in (_LVT, _T) and p == _T:
                brk = False  # GB8
            elif p in (_EXTEND, _ZWJ, _SPACING):
                brk = False  # GB9, GB9a
            elif prev == _PREPEND:
                brk = False  # GB9b
            elif conjuncts and linked and cp != INVALID and int(gc[cp]) in _LETTER_CATEGORIES:
                brk = False  # GB9c, as this project applies it
            elif pict_zwj and cp != INVALID and pict[cp]:
                brk = False  # GB11
            elif prev == _RI and p == _RI and ri_run % 2 == 1:
                brk = False  # GB12, GB13
            else:
                brk = True
            out.append(brk)
        # State for the next character.
        is_pict = cp != INVALID and bool(pict[cp])
        pict_zwj = after_pict and p == _ZWJ
        after_pict = is_pict or (after_pict and p == _EXTEND)
        ri_run = ri_run + 1 if p == _RI else 0
        if cp != INVALID and link[cp]:
            linked = True
        elif p not in (_EXTEND, _ZWJ, _SPACING):
            linked = False
    return out


def boundaries_inside_clusters(data: bytes, levels: object, level: int = 1, *, conjuncts: bool = True) -> int:
    """How many boundaries of ``level`` or higher fall inside a grapheme cluster of ``data``
    (a boundary on a character that the next character continues)."""
    chars = decode(data)
    starts = cluster_starts(chars.cp.tolist(), conjuncts=conjuncts)
    ends = chars.ends.tolist()
    inside = 0
    for i in range(len(ends) - 1):
        if levels[ends[i]] >= level and not starts[i + 1]:
            inside += 1
    return inside


def clusters(data: bytes, *, conjuncts: bool = True) -> list[bytes]:
    """``data`` cut into grapheme clusters."""
    chars = decode(data)
    starts = cluster_starts(chars.cp.tolist(), conjuncts=conjuncts)
    ends = chars.ends.tolist()
    out, begin = [], 0
    for i in range(1, len(ends)):
        if starts[i]:
            out.append(data[begin : ends[i - 1] + 1])
            begin = ends[i - 1] + 1
    if ends:
        out.append(data[begin:])
    return out
