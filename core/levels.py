"""A stack of splitters gives every byte a level (docs/method.md section 2).

``SplitterStack((s1, s2, s3)).levels(data)`` returns one uint8 per byte: the highest i such that
splitter i marks the byte's character (0 if none marks it), so a byte of level 3 is a boundary at
levels 1, 2 and 3 and the stages nest by construction. No BOS is included: the model forces each
document start to the top level itself.

Streaming: ``stack.stream()`` runs the product of all splitters' state machines over
(character class, byte length), tabulated lazily into a byte-level table shared by every stream of
the stack: each ASCII byte costs one list lookup once its transition has been seen; other bytes go
through a small UTF-8 decoder. Work per byte is O(1) and memory is bounded: a stream holds its row
in the table and at most three pending bytes of an unfinished character, and the shared table
holds at most ``MAX_TABLE_SLOTS`` entries (128 MB; the 3-level script stack reaches 430
states, 0.7 MB, streaming all 525 UDHR texts). Should the table be full, a stream needing a
new state steps the splitters' machines directly (still O(1) per byte, about ten times slower)
and says so.

A splitter that reads bytes through a model (``aunet.core.splitter.ModelSplitter``) has no table:
its machine never marks, and a stack that holds one streams through ``ModelLevelStream``, which
feeds every byte to the splitter's own ``ByteStream`` beside the table and takes its mark where the
byte ends a character that may be a boundary, exactly where the batch form places it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Hashable, Sequence

import attrs
import numpy as np

from aunet.core.errors import SpecIssue
from aunet.core.splitter import ByteStream, ModelSplitter, Splitter
from aunet.core.text import INVALID, LEAD_LENGTH, SECOND_RANGE, TABLE_SIZE, Chars, CharTable, as_bytes_array, decode

#: Entries (list slots, 8 bytes each) a stack's table may hold; past them a stream steps the
#: machines directly. Each state takes 128 (ASCII bytes) + 4 x classes entries.
MAX_TABLE_SLOTS = 16_000_000
#: Compiled stacks kept (their tables are shared by every stream of the stack).
CACHED_STACKS = 16


@attrs.frozen
class SplitterStack:
    """The splitters of levels 1..L, bottom first."""

    splitters: tuple[Splitter, ...] = attrs.field(converter=tuple)

    @property
    def depth(self) -> int:
        """L, the number of pooling levels (the top level)."""
        return len(self.splitters)

    def check(self, path: str = "levels", level_numbers: Sequence[int] | None = None) -> list[SpecIssue]:
        """Problems with the order of the splitters, one per offending level.

        ``path`` names the spec list the splitters came from; splitter j sits at
        ``{path}[n].splitter`` with n = ``level_numbers[j]`` (by default j + 1: level 0 is the byte
        level and has none).
        """
        numbers = list(level_numbers) if level_numbers is not None else list(range(1, self.depth + 1))
        issues = [i for j, s in enumerate(self.splitters) for i in s.check(path=f"{path}[{numbers[j]}].splitter")]
        for j in range(1, self.depth):
            below, splitter = self.splitters[j - 1], self.splitters[j]
            if splitter.granularity is None or below.granularity is None:
                continue
            if splitter.granularity < below.granularity:
                issues.append(
                    SpecIssue(
                        f"{path}[{numbers[j]}].splitter.kind",
                        f"'{splitter.kind}' ({splitter.granularity} per segment) cannot sit above "
                        f"'{below.kind}' ({below.granularity} per segment) at level {numbers[j - 1]}; "
                        "order the levels from fine to coarse",
                    )
                )
        return issues

    def levels(self, data: bytes | np.ndarray) -> np.ndarray:
        """(T,) uint8 level of every byte of one document (no BOS)."""
        chars = decode(data)
        return self.levels_of(chars)

    def levels_of(self, chars: Chars) -> np.ndarray:
        """Like ``levels`` for an already decoded document."""
        per_char = np.zeros(len(chars), dtype=np.uint8)  # (M,)
        if len(chars) == 0:
            return per_char
        for level, splitter in enumerate(self.splitters, start=1):
            marked = _as_indices(splitter.marks(chars), len(chars), splitter)
            # Ascending levels overwrite lower ones: the result is the highest marking level.
            per_char[marked] = level
        per_char[chars.unmarkable] = 0
        return chars.to_bytes(per_char)  # (T,)

    @property
    def models(self) -> tuple[tuple[int, ModelSplitter], ...]:
        """(level, splitter) of the splitters that read bytes through a model."""
        return tuple((i, s) for i, s in enumerate(self.splitters, start=1) if isinstance(s, ModelSplitter))

    def stream(self) -> LevelStream:
        """A fresh streaming splitter at the start of a document."""
        models = self.models
        return ModelLevelStream(_compile(self), models) if models else LevelStream(_compile(self))


def _as_indices(marks: np.ndarray, n_chars: int, splitter: Splitter) -> np.ndarray:
    marks = np.asarray(marks)
    if marks.dtype == bool:
        if marks.shape != (n_chars,):
            raise ValueError(
                f"splitter '{splitter.kind}' returned a mask of shape {marks.shape}; expected ({n_chars},)"
            )
        return np.flatnonzero(marks)
    if marks.ndim != 1 or not np.issubdtype(marks.dtype, np.integer):
        raise ValueError(
            f"splitter '{splitter.kind}' returned {marks.dtype} marks of shape {marks.shape}; "
            "expected a bool mask over characters or an int array of character indices"
        )
    return marks


class _Product:
    """The product machine of a stack, over combined classes (interpreted form)."""

    def __init__(self, stack: SplitterStack, components: np.ndarray) -> None:
        self.splitters = stack.splitters
        self.components = [tuple(int(c) for c in row) for row in components]  # combined -> per splitter

    def start(self) -> tuple[Hashable, ...]:
        return tuple(s.start() for s in self.splitters)

    def step(self, state: tuple[Hashable, ...], cls: int, nbytes: int) -> tuple[tuple[Hashable, ...], int]:
        level = 0
        nxt = []
        for i, (splitter, sub, c) in enumerate(zip(self.splitters, state, self.components[cls]), start=1):
            sub, marked = splitter.step(sub, c, nbytes)
            nxt.append(sub)
            if marked:
                level = i
        return tuple(nxt), level


def _combined_classes(stack: SplitterStack) -> tuple[np.ndarray, np.ndarray]:
    """One class table for the whole stack, and for each combined class the class it has under
    each splitter's own table: (TABLE_SIZE,) combined, (C, n_splitters) components."""
    tables: list[CharTable] = [s.char_table() for s in stack.splitters]
    if all(t is tables[0] for t in tables):
        n = tables[0].n_classes
        return tables[0].table, np.repeat(np.arange(n)[:, None], len(tables), axis=1)
    key = np.zeros(tables[0].table.shape, dtype=np.int64)
    for t in tables:
        key = key * t.n_classes + t.table
    unique, combined = np.unique(key, return_inverse=True)
    if len(unique) > 255:
        raise ValueError(f"the splitters of this stack distinguish {len(unique)} character classes; at most 255")
    components = np.zeros((len(unique), len(tables)), dtype=np.int64)
    rest = unique.copy()
    for j in range(len(tables) - 1, -1, -1):
        components[:, j] = rest % tables[j].n_classes
        rest //= tables[j].n_classes
    return combined.astype(np.uint8), components


class Automaton:
    """The product of a stack's machines, tabulated lazily and shared by all its streams.

    A transition is computed the first time any stream of the stack takes it, then kept: the
    tables only ever hold reachable states, however large the product could be. ``fast[row +
    byte]`` (ASCII bytes) and ``slow[state * n_inputs + cls * 4 + nbytes - 1]`` (any character)
    hold ``(next_row << 8) | level``, with ``row = state * 128``, or -1 where not computed yet.
    Row 0 is reserved and stays -1: a stream sits there while a multi-byte character is
    incomplete, which sends every byte to its UTF-8 decoder. Once the table holds
    ``MAX_TABLE_SLOTS`` entries, a stream that reaches an untabulated state steps the splitters'
    machines directly (still O(1) per byte).
    """

    def __init__(self, stack: SplitterStack) -> None:
        self.stack = stack
        if stack.splitters:
            combined, components = _combined_classes(stack)
        else:  # a flat byte model: every byte is level 0
            combined, components = np.zeros(TABLE_SIZE, dtype=np.uint8), np.zeros((1, 0), dtype=np.int64)
        self.classes = combined.tobytes()  # class of each code point (and INVALID)
        self.product = _Product(stack, components)
        self.n_inputs = len(components) * 4
        self.states: list[tuple[Hashable, ...]] = []
        self.index: dict[tuple[Hashable, ...], int] = {}
        self.fast: list[int] = [-1] * 128  # row 0: the pending row
        self.slow: list[int] = []
        self.start_row = self._add(self.product.start()) * 128

    def _add(self, state: tuple[Hashable, ...]) -> int:
        number = len(self.states) + 1  # state numbers start at 1: row 0 is the pending row
        self.index[state] = number
        self.states.append(state)
        self.fast.extend([-1] * 128)
        self.slow.extend([-1] * self.n_inputs)
        return number

    def transition(self, row: int, cls: int, nbytes: int) -> int:
        """``(next_row << 8) | level`` from ``row``; -1 if the next state is new and the table
        is full (the caller then steps the machines itself)."""
        number = row >> 7
        key = (number - 1) * self.n_inputs + cls * 4 + nbytes - 1
        value = self.slow[key]
        if value >= 0:
            return value
        nxt, level = self.product.step(self.states[number - 1], cls, nbytes)
        target = self.index.get(nxt)
        if target is None:
            if len(self.fast) + len(self.slow) + 128 + self.n_inputs > MAX_TABLE_SLOTS:
                return -1
            target = self._add(nxt)
        value = self.slow[key] = (target * 128) << 8 | level
        return value

    @property
    def info(self) -> str:
        return f"tabulated lazily: {len(self.states)} states reached so far, {self.n_inputs // 4} classes"


@functools.lru_cache(maxsize=CACHED_STACKS)
def _compile(stack: SplitterStack) -> Automaton:
    return Automaton(stack)


class LevelStream:
    """Levels of a document fed a byte (or a chunk) at a time; equal to the batch levels.

    ``push(byte)`` returns the level of that byte the moment it arrives. ``feed(chunk)`` returns
    the levels of a chunk. A byte that starts a multi-byte character gets level 0 on arrival
    (a boundary goes on a character's last byte).
    """

    __slots__ = ("_automaton", "_classes", "_fast", "_need", "_pending", "_resume", "_row", "_state", "depth")

    def __init__(self, automaton: Automaton) -> None:
        self._automaton = automaton
        self._fast = automaton.fast
        self._classes = automaton.classes
        self.depth = automaton.stack.depth
        self.reset()

    def reset(self) -> None:
        """Start a new document."""
        self._row = self._automaton.start_row
        self._resume = 0
        self._pending = b""
        self._need = 0
        self._state: tuple[Hashable, ...] | None = None  # set when stepping untabulated machines

    @property
    def info(self) -> str:
        return self._automaton.info + (" (this stream steps the machines directly)" if self._state else "")

    def push(self, byte: int) -> int:
        """Consume one byte (0..255); return its level."""
        if 0 <= byte < 0x80:
            v = self._fast[self._row | byte]
            if v >= 0:
                self._row = v >> 8
                return v & 255
        return self._push_slow(byte)

    def feed(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        """Consume a chunk; return its (len(chunk),) uint8 levels (``push`` on every byte, with
        the tabulated ASCII transitions inlined: about three times faster)."""
        data = chunk if isinstance(chunk, bytes) else as_bytes_array(chunk).tobytes()
        out = bytearray(len(data))
        fast, row = self._fast, self._row
        for i, byte in enumerate(data):
            if byte < 0x80:
                v = fast[row | byte]  # row 0 (a character pending) holds -1: the slow path
                if v >= 0:
                    row = v >> 8
                    out[i] = v & 255
                    continue
            self._row = row
            out[i] = self._push_slow(byte)
            row = self._row
        self._row = row
        return np.frombuffer(bytes(out), dtype=np.uint8)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished character held (0 to 3): the stream's only buffer."""
        return len(self._pending)

    # -- the slow path: untabulated transitions and the UTF-8 decoder ------------------------------

    def _push_slow(self, byte: int) -> int:
        if not 0 <= byte <= 255:
            raise ValueError(f"push expects a byte value in 0..255, got {byte}")
        if self._pending:
            lo, hi = SECOND_RANGE[self._pending[0]] if len(self._pending) == 1 else (0x80, 0xBF)
            if lo <= byte <= hi:
                self._pending += bytes((byte,))
                self._need -= 1
                if self._need:
                    return 0
                cp = ord(self._pending.decode("utf-8"))
                nbytes = len(self._pending)
                self._end_pending()
                return self._char(self._classes[cp], nbytes)
            # The sequence is broken: its bytes were invalid characters all along. Their levels
            # (0) are already out; step the machine over them, then read this byte afresh (through
            # the table alone: a model's stream has read it already).
            broken = self._pending
            self._end_pending()
            for _ in broken:
                self._char(self._classes[INVALID], 1)
            return LevelStream.push(self, byte)
        if byte < 0x80:  # an ASCII transition not tabulated yet
            row = self._row
            level = self._char(self._classes[byte], 1)
            if self._state is None and row:
                self._fast[row | byte] = (self._row << 8) | level
            return level
        length = LEAD_LENGTH[byte]
        if length >= 2:
            self._pending = bytes((byte,))
            self._need = length - 1
            self._resume, self._row = self._row, 0  # row 0: every byte comes here
            return 0
        return self._char(self._classes[INVALID], 1)  # a lone continuation byte or C0, C1, F5..FF

    def _end_pending(self) -> None:
        self._pending = b""
        self._need = 0
        self._row = self._resume

    def _char(self, cls: int, nbytes: int) -> int:
        if self._state is None:
            v = self._automaton.transition(self._row, cls, nbytes)
            if v >= 0:
                self._row = v >> 8
                return v & 255
            # The table is full: from here on, step the machines directly.
            self._state = self._automaton.states[(self._row >> 7) - 1]
            warnings.warn(
                f"aunet: streaming splitter table full ({MAX_TABLE_SLOTS} entries); this stream now "
                "steps the splitters directly (about 10x slower)",
                RuntimeWarning,
                stacklevel=4,
            )
        self._state, level = self._automaton.product.step(self._state, cls, nbytes)
        self._row = 0  # no tabulated row: every byte takes the slow path
        return level


class ModelLevelStream(LevelStream):
    """A ``LevelStream`` for a stack with splitters that read bytes through a model: every byte
    goes through the table and to each such splitter's ``ByteStream``; a byte's level is the
    highest of the table's and of the levels whose model marks it, where the byte ends a character
    (no character is pending after it). The bytes of a character cut short never get a model's
    mark: their levels were out, at 0, before the sequence broke, as in the batch form."""

    __slots__ = ("_models", "_streams")

    def __init__(self, automaton: Automaton, models: Sequence[tuple[int, ModelSplitter]]) -> None:
        self._models = tuple(models)
        self._streams: list[tuple[int, ByteStream]] = []
        super().__init__(automaton)

    def reset(self) -> None:
        super().reset()
        self._streams = [(level, splitter.stream()) for level, splitter in self._models]

    def push(self, byte: int) -> int:
        level = LevelStream.push(self, byte)
        marked = [lv for lv, stream in self._streams if stream.push(byte)]  # every model reads every byte
        if marked and not self._pending:
            level = max(level, *marked)
        return level

    def feed(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        """Consume a chunk; its (len(chunk),) uint8 levels. Each model reads the chunk at once."""
        data = chunk if isinstance(chunk, bytes) else as_bytes_array(chunk).tobytes()
        marks = [(lv, stream.feed(data)) for lv, stream in self._streams]  # (len(chunk),) bool each
        out = np.zeros(len(data), dtype=np.uint8)
        for i, byte in enumerate(data):
            level = LevelStream.push(self, byte)
            if not self._pending:
                for lv, marked in marks:
                    if marked[i] and lv > level:
                        level = lv
            out[i] = level
        return out


def positions_at_least(levels: np.ndarray, depth: int) -> np.ndarray:
    """(depth + 1,) int64: entry i counts the positions of (N,) ``levels`` at level i or above
    (entry 0 counts every position of level 0..depth)."""
    counts = np.bincount(levels, minlength=depth + 1)[: depth + 1]
    return np.cumsum(counts[::-1])[::-1]


@attrs.frozen
class SegmentStats:
    """How a stack cut one text: per level (1..L), the number of segments and bytes per segment.

    A segment is the bytes up to and including a boundary of that level or higher; bytes after
    the last boundary form one more (still open) segment.
    """

    n_bytes: int
    segments: tuple[int, ...]

    @property
    def bytes_per_segment(self) -> tuple[float, ...]:
        return tuple(self.n_bytes / s if s else 0.0 for s in self.segments)


class SegmentCounts:
    """``SegmentStats`` of one text whose levels come a chunk at a time (a file streamed
    through the splitters); ``add`` every chunk in order, then read ``stats()``."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.at_least = np.zeros(depth + 1, dtype=np.int64)
        self.n_bytes = 0
        self.last = -1

    def add(self, levels: np.ndarray) -> None:
        self.at_least += positions_at_least(levels, self.depth)
        self.n_bytes += len(levels)
        if len(levels):
            self.last = int(levels[-1])

    def stats(self) -> SegmentStats:
        segments = tuple(
            int(self.at_least[i]) + int(self.n_bytes > 0 and self.last < i) for i in range(1, self.depth + 1)
        )
        return SegmentStats(self.n_bytes, segments)


def segment_stats(levels: np.ndarray, depth: int) -> SegmentStats:
    """Segments per level of one document's (T,) levels."""
    counts = SegmentCounts(depth)
    counts.add(np.asarray(levels))
    return counts.stats()
