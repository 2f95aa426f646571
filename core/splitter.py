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

A second kind, ``ModelSplitter``, decides its marks from the bytes through a model (BLT's
entropy patches: ``aunet.splitters.entropy``), which no table can hold. Its batch form is
``marks`` as above, reading ``chars.data``; its streaming form is a ``ByteStream`` that reads
every byte as it arrives (a model's KV cache), and a stack's stream asks it beside the table
(``aunet.core.levels``). The rule is the same: the mark of a character depends only on the bytes
up to its last one, so such a splitter is prefix-stable by construction too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import ClassVar

import attrs
import numpy as np

from aunet.core.errors import SpecIssue
from aunet.core.text import Chars, CharTable, any_character


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

    def check(self, *, path: str) -> list[SpecIssue]:
        """Problems that stop this splitter from splitting (a model it cannot read), each at a path
        under ``path`` (``levels[1].splitter``). Rules have none."""
        return []

    def pinned(self) -> Splitter:
        """This splitter with what it reads fixed for good, for a run's resolved spec (a model
        named by a run directory becomes that run's newest checkpoint and the SHA-256 of its
        weights); SpecError, its paths under the splitter (``model``), when that cannot be read.
        Rules read nothing: the splitter itself."""
        return self

    @property
    def is_pinned(self) -> bool:
        """Whether ``pinned`` would change nothing."""
        return True

    def flops_per_byte(self) -> float:
        """Forward FLOPs per byte that deciding the marks costs (a model's forward; rules count
        as nothing), which a spec's FLOPs per byte adds (``aunet.core.accounting``)."""
        return 0.0


class ByteStream(ABC):
    """The streaming form of a ``ModelSplitter`` over one document: every byte, in order, once."""

    @abstractmethod
    def push(self, byte: int) -> bool:
        """Read the next byte (0..255); whether the splitter marks the character that ends with it.
        Asked after every byte: the stack uses the answer only where the byte ends a character
        that may be a boundary (``aunet.core.text``, rules 1 and 3)."""

    def feed(self, chunk: bytes) -> np.ndarray:
        """``push`` on every byte of ``chunk``: (len(chunk),) bool. A stream may read a chunk at
        once (a model's batched forward), with the same answers."""
        return np.fromiter((self.push(byte) for byte in chunk), dtype=bool, count=len(chunk))


class ModelSplitter(Splitter):
    """A splitter whose marks come from the bytes through a model (module docstring).

    Contract:
        * ``marks(chars)`` reads the document's bytes (``chars.data``) and marks character c
          from the bytes up to ``chars.ends[c]`` only; ``stream()`` fed the same bytes one at a
          time (or in chunks) gives the same marks.
        * Its machine over characters never marks (one state): a stack's table carries it at no
          cost, and the stack's stream asks the splitter's ``ByteStream`` instead.
        * ``model`` names the folder it reads (``model_files`` in it); ``at`` reads the same files
          from another folder (what an export holds).
    """

    #: The folder the splitter reads its model from: a spec option, a field of the subclass.
    model: str

    def char_table(self) -> CharTable:
        return any_character()

    def start(self) -> None:
        return None

    def step(self, state: Hashable, cls: int, nbytes: int) -> tuple[None, bool]:
        return None, False

    @abstractmethod
    def stream(self) -> ByteStream:
        """A fresh streaming form at the start of a document."""

    @abstractmethod
    def model_files(self) -> tuple[str, ...]:
        """The files of ``model`` that the splitter reads, by name (what an export copies)."""

    def at(self, folder: str) -> ModelSplitter:
        """The same splitter reading its model's files from ``folder``."""
        return attrs.evolve(self, model=folder)
