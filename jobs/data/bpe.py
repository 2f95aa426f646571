"""The BPE baseline's tokenizer: byte-level BPE trained with Hugging Face ``tokenizers``.

Ids follow aunet's byte vocabulary so that everything downstream stays as it is: 0..255 are the
single bytes, 256..258 BOS, EOS and PAD, and the merges take 259 upwards, in the order the trainer
learned them. Text is first cut into the GPT-4 / Llama 3 pre-tokenizer's pieces by aunet's own
``pretok`` splitter, which works on any bytes (invalid UTF-8 included: every byte has a
character in the byte-level alphabet), then each piece is encoded by the trained BPE model, so
no merge crosses a piece boundary, as with the tokenizers the paper compares against.

The tokenizer is saved as JSON (the ``tokenizers`` model and aunet's format tag); loading it
runs no code. It needs ``pip install aunet[bpe]``.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from aunet.core.encoding import Encoded, Encoding, IdStream, Pair, Piece, Prompt
from aunet.core.errors import InputError
from aunet.core.tokens import BOS, EOS, PAD, VOCAB_SIZE

FORMAT = "aunet-bpe/1"
FILE = "tokenizer.json"


@functools.cache
def byte_alphabet() -> tuple[str, ...]:
    """The byte-level BPE alphabet (GPT-2's): one printable character per byte value."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


@functools.cache
def _char_to_byte() -> dict[str, int]:
    return {c: b for b, c in enumerate(byte_alphabet())}


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise InputError("the BPE baseline needs Hugging Face tokenizers: pip install 'aunet[bpe]'") from None
    return tokenizers


def pieces(data: bytes) -> list[bytes]:
    """``data`` cut before the first byte of every pre-tokenizer piece (the ``pretok`` splitter)."""
    from aunet.core.levels import SplitterStack
    from aunet.splitters.pretok import Pretok

    if not data:
        return []
    starts = np.flatnonzero(SplitterStack((Pretok(),)).levels(data) >= 1)
    cuts = [0, *[int(s) for s in starts if s > 0], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def _mapped(piece: bytes) -> str:
    alphabet = byte_alphabet()
    return "".join(alphabet[b] for b in piece)


class BpeTokenizer:
    """Bytes <-> aunet token ids (module docstring). ``token_bytes[i]`` is id i's bytes."""

    def __init__(self, model: Any, vocab_size: int) -> None:
        self.model = model
        self.vocab_size = vocab_size
        to_byte = _char_to_byte()
        hf_vocab = sorted(model.get_vocab().items(), key=lambda item: item[1])
        mapping = np.full(max(i for _, i in hf_vocab) + 1, -1, dtype=np.int64)
        token_bytes: list[bytes] = [bytes([b]) for b in range(256)] + [b"", b"", b""]
        for text, hf_id in hf_vocab:
            raw = bytes(to_byte[c] for c in text)
            if len(raw) == 1:
                mapping[hf_id] = raw[0]
            else:
                mapping[hf_id] = len(token_bytes)
                token_bytes.append(raw)
        if len(token_bytes) > vocab_size:
            raise InputError(f"the tokenizer holds {len(token_bytes):,} ids, more than vocab_size = {vocab_size:,}")
        self._to_ours = mapping
        self.token_bytes = token_bytes
        #: (vocab_size,) bytes each id stands for (0 for BOS, EOS, PAD and unused ids).
        self.lengths = np.zeros(vocab_size, dtype=np.int64)
        self.lengths[: len(token_bytes)] = [len(t) for t in token_bytes]

    # -- training and files ------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[bytes], vocab_size: int) -> BpeTokenizer:
        """Learn ``vocab_size - 259`` merges (at most) from ``texts``."""
        tk = _tokenizers()
        model = tk.Tokenizer(tk.models.BPE())
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size - (VOCAB_SIZE - 256),
            show_progress=False,
            initial_alphabet=list(byte_alphabet()),
            special_tokens=[],
        )

        def stream() -> Iterator[str]:
            for text in texts:
                yield from (_mapped(p) for p in pieces(text))

        model.train_from_iterator(stream(), trainer=trainer)
        return cls(model, vocab_size)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "vocab_size": self.vocab_size, "model": json.loads(self.model.to_str())})

    @classmethod
    def from_json(cls, text: str, *, source: str = "tokenizer.json") -> BpeTokenizer:
        try:
            record = json.loads(text)
            if record.get("format") != FORMAT:
                raise ValueError(f"format {record.get('format')!r}, expected {FORMAT!r}")
            model = _tokenizers().Tokenizer.from_str(json.dumps(record["model"]))
            return cls(model, int(record["vocab_size"]))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises its own types for a bad model
            raise InputError(f"{source}: not a readable aunet BPE tokenizer ({exc})") from None

    def save(self, path: Path) -> None:
        from aunet.jobs.runtime.files import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> BpeTokenizer:
        if not path.is_file():
            raise InputError(f"{path}: missing; a BPE run keeps its tokenizer there (it was trained on the run's data)")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))

    # -- use -----------------------------------------------------------------------------------

    def encode(self, data: bytes) -> np.ndarray:
        """(N,) int32 ids of ``data``, no BOS or EOS."""
        parts = pieces(data)
        if not parts:
            return np.zeros(0, dtype=np.int32)
        # Pieces are encoded each on its own, and text repeats them (words): each distinct piece
        # is encoded once (three times faster on the embedded corpus).
        distinct = list(dict.fromkeys(parts))
        encoded = self.model.encode_batch([_mapped(p) for p in distinct], add_special_tokens=False)
        table = {p: e.ids for p, e in zip(distinct, encoded)}
        ids = np.fromiter(itertools.chain.from_iterable(table[p] for p in parts), dtype=np.int64)
        return self._to_ours[ids].astype(np.int32)

    def decode(self, ids: Sequence[int]) -> bytes:
        table = self.token_bytes
        return b"".join(table[i] if 0 <= i < len(table) else b"" for i in ids)

    def bytes_of(self, token: int) -> bytes:
        return self.token_bytes[token] if 0 <= token < len(self.token_bytes) and token not in (BOS, EOS, PAD) else b""


def bytes_per_token(tokenizer: BpeTokenizer, texts: Iterable[bytes]) -> float:
    """Bytes over tokens on ``texts`` (what FLOPs per byte divides by)."""
    n_bytes = n_tokens = 0
    for text in texts:
        n_bytes += len(text)
        n_tokens += len(tokenizer.encode(text))
    return n_bytes / max(n_tokens, 1)


def trained_tokenizer(config: Any, corpus: Any) -> BpeTokenizer:
    """The tokenizer a BPE spec's ``[model] tokenizer`` (``config``) asks for, trained on
    ``corpus``'s training split (``trained_on = "train"``) or on a whole embedded corpus, which
    must be another text than ``corpus`` (the whole of it holds its validation documents)."""
    from aunet.jobs.data.corpus import load_corpus

    if config.trained_on == "train":
        return BpeTokenizer.train((d.data for d in corpus.train), config.vocab_size)
    source = load_corpus(config.trained_on)
    if source.source == corpus.source:
        raise InputError(
            f'model.tokenizer.trained_on = "{config.trained_on}" is the run\'s own corpus, whose validation '
            'documents the tokenizer would learn from; use "train" (its training split) or another corpus'
        )
    return BpeTokenizer.train((d.data for d in source.documents), config.vocab_size)


@functools.cache
def embedded_bytes_per_token(vocab_size: int, trained_on: str = "train") -> float:
    """Bytes per token on the embedded corpus's training split of a tokenizer of ``vocab_size``
    ids trained as ``trained_on`` says (what ``spec show`` reports for a BPE spec that gives none;
    a run measures its own data)."""
    from aunet.core.spec import TokenizerKind, TokenizerSpec
    from aunet.jobs.data.corpus import load_corpus

    corpus = load_corpus(None)
    config = TokenizerSpec(kind=TokenizerKind.BPE, vocab_size=vocab_size, trained_on=trained_on)
    return bytes_per_token(trained_tokenizer(config, corpus), (d.data for d in corpus.train))


def with_bytes_per_token(spec: Any, measured: float) -> Any:
    """A BPE spec with its bytes per token filled in (and so its FLOPs per byte)."""
    tokenizer = attrs.evolve(spec.model.tokenizer, bytes_per_token=measured)
    return attrs.evolve(spec, model=attrs.evolve(spec.model, tokenizer=tokenizer))


class _TokenStream(IdStream):
    def __init__(self, tokenizer: BpeTokenizer) -> None:
        self.tokenizer = tokenizer

    def push(self, token: int) -> Piece:
        return Piece(self.tokenizer.bytes_of(token), 0)


@attrs.frozen(eq=False)
class BpeEncoding(Encoding):
    """The BPE baseline's input: BOS + the tokenizer's ids (+ EOS), int32, every position at
    level 0. ``bytes_per_position`` is the run's measured bytes per token (its spec records it)."""

    tokenizer: BpeTokenizer
    bytes_per_position: float  # type: ignore[misc]

    name = "bpe"
    unit = "tokens"
    depth = 0

    @property
    def id_count(self) -> int:  # type: ignore[override]
        return len(self.tokenizer.token_bytes)

    @classmethod
    def of(cls, tokenizer: BpeTokenizer, spec: Any) -> BpeEncoding:
        """The encoding of a BPE run whose ``spec`` records its measured bytes per token."""
        return cls(tokenizer, spec.model.bytes_per_position)

    def saved(self) -> dict[str, Any]:
        return json.loads(self.tokenizer.to_json())

    def encode(self, data: bytes, *, eos: bool = True) -> Encoded:
        ids = np.asarray(self.tokenizer.encode(data), dtype=np.int32)
        return Encoded(ids, np.zeros(len(ids) + 1 + eos, dtype=np.uint8), eos)

    def covered(self, ids: np.ndarray) -> int:
        return int(self.tokenizer.lengths[ids].sum())

    def target_bytes(self, targets: np.ndarray) -> int:
        return int(self.tokenizer.lengths[targets[targets >= 0]].sum())

    def prompt(self, data: bytes, limit: int) -> Prompt:
        encoded = self.tokenizer.encode(data).astype(np.int64)
        ids = encoded[-limit:] if len(encoded) > limit else encoded
        dropped = int(self.tokenizer.lengths[encoded[: len(encoded) - len(ids)]].sum())
        return Prompt(ids, np.zeros(len(ids), dtype=np.uint8), dropped, _TokenStream(self.tokenizer))

    def pair(self, context: bytes, continuation: bytes, limit: int) -> Pair:
        # Encoded apart, as lm-evaluation-harness does for a tokenizer: the continuation's own
        # tokens are scored, whatever merges would have crossed the seam.
        head = self.tokenizer.encode(context)
        tail = self.tokenizer.encode(continuation)
        ids = np.concatenate([head, tail]).astype(np.int32)
        kept = ids[-limit:] if len(ids) > limit else ids
        dropped = int(self.tokenizer.lengths[ids[: len(ids) - len(kept)]].sum())
        cut_tail = tail[: max(0, len(tail) - limit)]
        encoded = Encoded(kept, np.zeros(len(kept) + 1, dtype=np.uint8), eos=False)
        return Pair(encoded, min(len(tail), limit), dropped, int(self.tokenizer.lengths[cut_tail].sum()))
