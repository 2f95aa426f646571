"""BLT's entropy patches as a splitter (``entropy``): a small flat byte model, trained by aunet
itself (``specs/entropy-tiny.toml``), reads the document, and a character ends a segment where the
model is unsure of the byte after it (Pagnoni et al., Byte Latent Transformer, arXiv 2412.09871,
section 2.3).

**The rule.** Let e_j be the entropy, in bits, of the small model's next-token distribution after
byte j (its prediction of byte j + 1; 259 ids: the bytes, BOS, EOS and PAD), and e_-1 its entropy
after BOS alone, before the first byte. The character whose last byte is j ends a segment when

- ``global``: e_j > ``threshold`` (BLT's global threshold), or
- ``monotonic``: e_j - e_{j-1} > ``threshold`` (BLT's approximate monotonic rule; e_{j-1} is the
  previous byte's, whatever character it belongs to).

BLT starts a new patch at byte t when H(x_t | x_<t) is high; in aunet a boundary closes a segment,
so the same bytes are cut when the character that ends at byte t - 1 ends a segment on
e_{t-1} = H(x_t | x_<=t-1). Only characters end segments (the core places a mark on a character's
last byte and never on the bytes of a character cut short: ``aunet.core.text``), so no UTF-8
character is cut, where BLT's patches may cut one. BLT's thresholds are in nats: divide by ln 2.

**Context.** The model reads a document in windows of W = context - 1 bytes, each after a BOS of
its own: e_j reads byte j's window up to j (BLT's entropy model, too, reads fixed chunks). The
batch form runs whole windows through the model, many at once; the streaming form reads a byte at a
time through the model's KV cache (``aunet.core.decoding``), opening a fresh cache at each window:
O(1) work per byte, memory bounded by one window. Both are prefix-stable by construction: e_j
reads no byte after j.

**Exactness.** The two forms compute the same numbers in two orders (a window's forward, one step
at a time), which agree to rounding only. The model runs in float64 on the CPU, where they differ by
about 1e-15 bits, so the forms disagree only where an entropy lies that close to the threshold (in
float32 they differ by about 2e-6 bits: a long text meets such a tie).

**The model** (``model``): a run directory (its newest complete checkpoint) or a checkpoint folder,
a relative path read from the working directory. It must be a flat byte model (one level of bytes);
its weights are checked against the SHA-256 its meta.json records and read as safetensors, never
unpickled (``aunet.core.checkpoints``), once per process. A run's resolved spec pins it
(``pinned``): the checkpoint folder, absolute, and the SHA-256 of its weights (``sha256``), so that
a resume, ``aunet eval``, ``aunet generate`` and a Hugging Face export (which ships the weights)
read the model the run was trained with, or say that it is gone or changed. The model is frozen:
nothing trains it, and a spec's FLOPs per byte count its forward (``flops_per_byte``).

This module is torch-free (reading a spec and checking it do not load torch); the model itself
runs in ``aunet.splitters.entropy_model``, imported when a document is first split.
"""

from __future__ import annotations

import enum
import functools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import attrs
import numpy as np

from aunet.core import checkpoints
from aunet.core.errors import AunetError, SpecError, SpecIssue
from aunet.core.splitter import ByteStream, ModelSplitter
from aunet.core.text import Chars

if TYPE_CHECKING:
    from aunet.core.spec import Spec
    from aunet.splitters.entropy_model import EntropyModel, EntropyReader

#: What a missing model's message suggests.
TRAIN_HINT = "train one first: `aunet train --spec entropy-tiny --out runs/entropy-tiny`"


class EntropyRule(enum.Enum):
    """Where a high entropy ends a segment (module docstring)."""

    GLOBAL = "global"  # e_j > threshold
    MONOTONIC = "monotonic"  # e_j - e_{j-1} > threshold


def _sha256(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"expected 64 lowercase hexadecimal digits (a SHA-256), got {value!r}")


def _threshold(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not -16.0 <= value <= 16.0:
        raise ValueError(f"must be between -16 and 16 bits (an entropy over 259 ids is at most 8.02), got {value}")


def _path(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip() or "\x00" in value:
        raise ValueError(f"expected a folder: a run directory or a checkpoint, got {value!r}")


@attrs.frozen(kw_only=True)
class Entropy(ModelSplitter):
    """A character after which a small byte model is unsure of the next byte (BLT's entropy
    patches; module docstring)."""

    kind: ClassVar[str] = "entropy"

    model: str = attrs.field(validator=_path)
    """The small model: a run directory (its newest complete checkpoint) or a checkpoint folder,
    relative to the working directory; a run's resolved spec records the checkpoint, absolute."""
    rule: EntropyRule = EntropyRule.GLOBAL
    """``global`` (the entropy after a character's last byte is above ``threshold``) or
    ``monotonic`` (it is above the previous byte's by more than ``threshold``)."""
    threshold: float = attrs.field(default=2.0, validator=_threshold)
    """In bits (BLT's are in nats: divide by ln 2)."""
    sha256: str | None = attrs.field(default=None, validator=_sha256)
    """The SHA-256 of the model's weights (``model.safetensors``): a run's resolved spec records
    it, and a model whose weights differ is refused."""

    def describe(self) -> str:
        sign = ">" if self.rule is EntropyRule.GLOBAL else "rises by >"
        return f"entropy of {self.model} {sign} {self.threshold:g} bits (BLT's entropy patches)"

    # -- the model -------------------------------------------------------------------------------

    def found(self) -> Found:
        """Where the model is, checked (SpecError, at ``model``, when it cannot be read)."""
        return _find(os.path.abspath(os.path.expanduser(self.model)), self.model, self.sha256)

    def loaded(self) -> EntropyModel:
        """The model itself (loaded once per process, in float64, frozen)."""
        from aunet.splitters.entropy_model import load

        found = self.found()
        return load(str(found.path), found.sha256)

    def check(self, *, path: str) -> list[SpecIssue]:
        try:
            self.found()
        except SpecError as exc:
            return [attrs.evolve(issue, path=f"{path}.{issue.path}") for issue in exc.issues]
        return []

    def pinned(self) -> Entropy:
        found = self.found()
        return attrs.evolve(self, model=str(found.path), sha256=found.sha256)

    @property
    def is_pinned(self) -> bool:
        return self.sha256 is not None and os.path.isabs(self.model)

    def flops_per_byte(self) -> float:
        from aunet.core.accounting import forward_flops_per_byte

        return forward_flops_per_byte(self.found().spec)

    def model_files(self) -> tuple[str, ...]:
        return (checkpoints.META, checkpoints.MODEL_FILE)

    # -- the two forms ---------------------------------------------------------------------------

    def marks(self, chars: Chars) -> np.ndarray:
        entropy = self.loaded().entropies(chars.data)  # (T + 1,) e_-1, e_0, ..., e_{T-1}
        return fires(entropy, self.rule, self.threshold)[chars.ends]  # (M,) at each character's last byte

    def stream(self) -> EntropyStream:
        return EntropyStream(self)


def fires(entropy: np.ndarray, rule: EntropyRule, threshold: float) -> np.ndarray:
    """(T,) bool: whether the rule marks byte j, from (T + 1,) entropies e_-1, ..., e_{T-1}."""
    after = entropy[1:]
    if rule is EntropyRule.GLOBAL:
        return after > threshold
    return after - entropy[:-1] > threshold


class EntropyStream(ByteStream):
    """The streaming form: each byte through the model's KV cache, the rule on its entropy."""

    def __init__(self, splitter: Entropy) -> None:
        self.rule = splitter.rule
        self.threshold = splitter.threshold
        self.reader: EntropyReader = splitter.loaded().reader()
        self.last = self.reader.model.first  # e_-1: after BOS alone

    def push(self, byte: int) -> bool:
        entropy = self.reader.push(byte)
        previous, self.last = self.last, entropy
        if self.rule is EntropyRule.GLOBAL:
            return entropy > self.threshold
        return entropy - previous > self.threshold

    def feed(self, chunk: bytes) -> np.ndarray:
        entropy = self.reader.feed(chunk)  # (N,)
        if not len(entropy):
            return np.zeros(0, dtype=bool)
        marks = fires(np.concatenate([[self.last], entropy]), self.rule, self.threshold)
        self.last = float(entropy[-1])
        return marks


# -- finding the model ---------------------------------------------------------------------------


@attrs.frozen
class Found:
    """A checkpoint of a flat byte model, its weights verified."""

    path: Path  # the checkpoint folder, absolute
    sha256: str  # of its model.safetensors
    spec: Spec  # the model's, from its meta.json


def _missing(message: str) -> SpecError:
    return SpecError([SpecIssue("model", message)])


@functools.lru_cache(maxsize=32)
def _find(path: str, named: str, sha256: str | None) -> Found:
    """The checkpoint at ``path`` (a run directory's newest, or the checkpoint folder itself),
    verified, once per process; ``named`` is what the spec says, for messages."""
    from aunet.core.convert import parse_spec

    folder = Path(path)
    if not folder.exists() and sha256 is not None:
        raise _missing(
            f"'{named}' does not exist; the spec pins the entropy model its run was trained with there "
            f"(weights of SHA-256 {sha256[:12]}...): put that checkpoint back, or name where it is now"
        )
    if not folder.exists():
        raise _missing(f"'{named}' does not exist; {TRAIN_HINT}")
    if not folder.is_dir():
        raise _missing(f"'{named}' is a file; give a run directory or a checkpoint folder")
    ckpt = folder if (folder / checkpoints.META).is_file() else checkpoints.latest(folder)
    if ckpt is None:
        raise _missing(f"'{named}' has no checkpoint; {TRAIN_HINT}")
    try:
        meta = checkpoints.verify(ckpt, (checkpoints.MODEL_FILE,))
    except checkpoints.CheckpointError as exc:
        raise _missing(f"'{named}': {exc}")
    digest = meta["files"][checkpoints.MODEL_FILE]["sha256"]
    if sha256 is not None and digest != sha256:
        raise _missing(
            f"'{named}' holds other weights (SHA-256 {digest[:12]}...) than the ones this spec pins "
            f"({sha256[:12]}...), which a run was trained with; give the checkpoint that holds those"
        )
    if not isinstance(meta.get("spec"), str):
        raise _missing(f"'{named}': checkpoint {ckpt} records no spec in its meta.json")
    try:
        spec = parse_spec(meta["spec"], source=f"{ckpt}/meta.json", ignore=("train",))
    except AunetError as exc:
        raise _missing(f"'{named}': the spec in {ckpt}/meta.json does not read: {str(exc).splitlines()[0]}")
    if spec.depth or spec.model.bpe:
        what = "a BPE model" if spec.model.bpe else f"an AU-Net of {spec.depth + 1} levels"
        raise _missing(
            f"'{named}' holds {what}; the entropy splitter reads a flat byte model "
            "(one level of bytes, as specs/entropy-tiny.toml)"
        )
    return Found(ckpt.absolute(), digest, spec)


__all__ = ["TRAIN_HINT", "Entropy", "EntropyRule", "EntropyStream", "Found", "fires"]
