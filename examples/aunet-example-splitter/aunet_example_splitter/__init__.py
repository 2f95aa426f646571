"""An example aunet plugin: the ``sentences`` splitter.

It marks the end of each sentence: the whitespace character right after ``.``, ``!`` or ``?``,
and the full-width terminators ``。！？`` themselves (Chinese and Japanese put no space after
them). Put it on top of the word levels for a sentence-level trunk::

    [[levels]]
    dim = 128
    [[levels]]
    dim = 256
    splitter = { kind = "whitespace" }
    [[levels]]
    dim = 384
    splitter = { kind = "sentences" }

A splitter states its rules twice, and aunet checks that the two agree
(``aunet.testing.check_splitter``): ``marks`` for a whole document at once, vectorized, and
``start``/``step``, the same rules as a small state machine over characters, which aunet compiles
into a table for streaming (generation decides each new byte's level as it arrives).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import attrs
import numpy as np

from aunet.core import TABLE_SIZE, WHITE_SPACE, Chars, CharTable, Splitter, hookimpl

OTHER, TERMINATOR, FULL_WIDTH, SPACE = range(4)


@functools.cache
def sentence_classes() -> CharTable:
    """Four classes are all these rules need; build the table once and share it."""
    table = np.full(TABLE_SIZE, OTHER, dtype=np.uint8)
    table[[ord(c) for c in ".!?"]] = TERMINATOR
    table[[ord(c) for c in "。！？"]] = FULL_WIDTH
    table[list(WHITE_SPACE)] = SPACE
    return CharTable("sentences", table, ("other", "terminator", "full-width terminator", "space"))


@attrs.frozen(kw_only=True)
class Sentences(Splitter):
    """Sentence ends: whitespace after . ! ? and the full-width 。！？ themselves."""

    kind: ClassVar[str] = "sentences"

    def char_table(self) -> CharTable:
        return sentence_classes()

    def marks(self, chars: Chars) -> np.ndarray:
        cls = chars.classes(sentence_classes())  # (M,)
        marks = cls == FULL_WIDTH
        marks[1:] |= (cls[1:] == SPACE) & (cls[:-1] == TERMINATOR)
        return marks

    def start(self) -> bool:
        return False  # "the previous character was a terminator"

    def step(self, state: bool, cls: int, nbytes: int) -> tuple[bool, bool]:
        return cls == TERMINATOR, (cls == SPACE and state) or cls == FULL_WIDTH


@hookimpl
def aunet_register_splitters(registry) -> None:
    registry.add_splitter(Sentences)
