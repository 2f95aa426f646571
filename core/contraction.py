"""Bytes per position at each level: how much each pooling step shortens the sequence
(docs/method.md section 7).

A level's contraction k_i decides two things: its share of the FLOPs (a stack at level i runs once
per k_i bytes) and its static shape (``ceil(T / k_i x margin) + 8`` segments per row). It is a
property of the splitters *and* the text, so aunet measures it on the text a model is trained on
and writes it into the resolved spec (``levels[i].contraction``): a checkpoint's shapes then never
depend on a corpus again. Without training data (``aunet.build_model`` on a bare spec, ``aunet
spec show``) it is measured on the embedded English corpus.

Positions are counted as the model sees them: every document is BOS + bytes + EOS, and its BOS is
at the top level.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from aunet.core.levels import SplitterStack, positions_at_least

#: Digits kept in a measured contraction written into a spec (readable, and ample for shapes).
DIGITS = 4


def contraction_of(levels: Iterable[np.ndarray], depth: int) -> tuple[float, ...]:
    """(k_1, ..., k_L) over documents given as (N,) level arrays that include their BOS (at the
    top level) and EOS: total positions / positions at level >= i."""
    positions = 0
    at_least = np.zeros(depth + 1, dtype=np.int64)
    for doc in levels:
        at_least += positions_at_least(doc, depth)
        positions += len(doc)
    return tuple(round(positions / max(int(at_least[i]), 1), DIGITS) for i in range(1, depth + 1))


@functools.lru_cache(maxsize=32)
def embedded_contraction(stack: SplitterStack, corpus: str = "en_web") -> tuple[float, ...]:
    """(k_1, ..., k_L) on an embedded corpus, cut into documents of 4 KB (about a chapter)."""
    from aunet.core.resources import read_corpus

    data = read_corpus(corpus)
    levels = stack.levels(data)
    at_least = positions_at_least(levels, stack.depth)
    n_docs = max(1, len(data) // 4096)  # each with a BOS (top level) and an EOS (level 0)
    positions = len(data) + 2 * n_docs
    return tuple(round(positions / float(at_least[i] + n_docs), DIGITS) for i in range(1, stack.depth + 1))
