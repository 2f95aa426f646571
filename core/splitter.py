"""The Splitter interface: which bytes are boundaries (docs/method.md section 2).

A splitter decides, for one level of the hierarchy, which characters of a document end a
segment. It is stated twice, and the two statements must agree (``aunet.testing`` checks it):

* ``marks(chars)``: the batch form, vectorized over a whole document (numpy, no Python loop per
  character). This is what training uses, once per document.
* ``start()`` / ``step(state, cls, nbytes)``: the same rules as a finite state machine over
  characters. This is the streaming form generation needs: each new byte's level is decided the
  moment it arrives, from the bytes before it only. A stack compiles the machines of all its
  splitters into one table (see ``aunet.core.levels``), so streaming costs one table lookup per
  byte whatever the depth.

Because the machine only ever sees the past, a splitter whose batch form agrees with its machine
is prefix-stable by construction: the levels of ``data[:c]`` are the first ``c`` levels of
``data``. Splitters see characters, never bytes; the core places every mark on the character's
last byte and drops marks on bytes of truncated sequences, so every splitter is UTF-8 safe
without doing anything (``aunet.core.text``).

Splitters are frozen attrs classes: their fields are their spec options, and the class constant
``kind`` is the name a spec file uses (``splitter = { kind = "whitespace" }``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import ClassVar

import attrs
import numpy as np

from aunet.core.text import Chars, CharTable


@attrs.frozen(kw_only=True)
class Splitter(ABC):
    """Marks the characters at which segments of one level end.

    Contract:
        * ``marks`` and the machine agree on every input (including invalid UTF-8).
        * The machine's states are hashable and few (they are enumerated to compile a table; a
          state that carries an unbounded counter must cap it).
        * Neither form raises on any input, and both are deterministic.
        * A splitter marks the characters it considers boundaries of *its* level. In a stack,
          a byte's level is the highest level whose splitter marks it, so levels nest by
          construction (a level-3 byte is a boundary at levels 1, 2 and 3).
    """

    #: Registry key, used as ``kind`` in spec files. Lowercase letters, digits and hyphens.
    kind: ClassVar[str]
    #: How many base units (words, for the word rules) one segment spans, or None if the
    #: notion does not apply. A stack refuses a splitter whose granularity is smaller than that
    #: of the level below it (a word-pair level below a whitespace level).
    granularity: ClassVar[int | None] = None

    @abstractmethod
    def char_table(self) -> CharTable:
        """The character classification the rules read. Return a cached, shared object."""

    @abstractmethod
    def marks(self, chars: Chars) -> np.ndarray:
        """Characters that end a segment at this level, for one whole document.

        Args:
            chars: the decoded document; ``chars.classes(self.char_table())`` gives the (M,)
                classes, and ``chars.memo`` shares analyses between splitters of a family.

        Returns:
            Either a (M,) bool mask over characters, or an int array of character indices
            (any order, duplicates allowed).
        """

    @abstractmethod
    def start(self) -> Hashable:
        """The machine's state at the start of a document."""

    @abstractmethod
    def step(self, state: Hashable, cls: int, nbytes: int) -> tuple[Hashable, bool]:
        """Consume one character.

        Args:
            state: the state after the previous character (``start()`` for the first).
            cls: the character's class under ``char_table()``.
            nbytes: its length in bytes (1 to 4; 1 for an invalid byte).

        Returns:
            ``(next_state, marked)``: whether this character ends a segment at this level.
        """

    def describe(self) -> str:
        """One line for humans (``aunet split``, ``aunet plugins``)."""
        doc = (type(self).__doc__ or "").strip().splitlines()
        return doc[0] if doc else self.kind
