"""The vectorized (batch) form of the script-aware splitters: rules 1 to 4 on a whole document
(``analyse``) and rule 5's length cap (``cap_cuts``), equal to the streaming machine of
``aunet.splitters.script`` (whose docstring states the rules) on every input."""

from __future__ import annotations

import attrs
import numpy as np

from aunet.core.text import Chars
from aunet.splitters.script_table import (
    CAP_ANY,
    CAP_ANY_MARKED,
    CAP_FINAL,
    CAP_MARK,
    CAP_MARK_MARKED,
    CJK,
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
    MAX_LETTER,
    NEWLINE,
    PREPEND,
    RI,
    SEA,
    SEA_ANY,
    SEA_END,
    SEA_MARK,
    SPACE,
    START,
    SYMBOL,
    ZWJ,
    script_classes,
)
from aunet.splitters.words import run_offsets


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
for _cls, _base in CLUSTER_BASE.items():
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
