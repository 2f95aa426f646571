"""Spec classes of the model's pluggable components (docs/method.md sections 1, 3, 4).

Each pluggable slot of a spec holds a small frozen attrs object whose fields are the component's
own options and whose class constant ``kind`` names it. The parent owns the widths: a level
decides ``dim``, and passes it (and its neighbours' widths) to ``build``; a user never repeats
``dim_in``/``dim_out``. Builders import torch lazily, so reading and checking specs stays fast and
torch-free.

The modules these build are defined in ``aunet.core.modules`` (Stage, Pooler, Upsampler,
AttentionBackend), with their contracts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from aunet.core.errors import SpecIssue

if TYPE_CHECKING:
    from aunet.core.modules import AttentionBackend, Pooler, Router, Stage, Upsampler
    from aunet.core.spec import Checkpointing


@attrs.frozen(kw_only=True)
class ComponentSpec(ABC):
    """Base of every pluggable component spec."""

    #: Registry key, the ``kind`` of spec files.
    kind: ClassVar[str]

    def check(self, *, path: str, **dims: int) -> list[SpecIssue]:
        """Problems that only show with the widths the parent gives (``dim % head_dim``), each
        with its path. Field-level checks belong in attrs validators instead."""
        return []


@attrs.frozen(kw_only=True)
class StageSpec(ComponentSpec):
    """A sequence model run at one level (encoder, decoder or trunk)."""

    @abstractmethod
    def build(self, *, dim: int, device: Any = None) -> Stage:
        """The module, for sequences of width ``dim``; attention backends are resolved for
        ``device`` here, once."""

    @abstractmethod
    def parameter_count(self, *, dim: int) -> int:
        """Parameters of one stack (for ``aunet spec show`` without building the model)."""

    @abstractmethod
    def flops_per_position(self, *, dim: int, attended: float) -> float:
        """Training FLOPs (forward and backward) per position of one stack, in the paper's
        accounting (docs/method.md section 7): 6 x non-embedding parameters + 6 x dim x layers x S,
        with S the number of positions attended."""

    def training_problems(self, *, device: Any, bfloat16: bool) -> list[str]:
        """Why this stage cannot train on ``device`` (its attention backend's reasons), if so."""
        return []

    def reference_flops_per_position(self, *, dim: int, attended: float) -> float | None:
        """Training FLOPs per position of one stack with the reference's estimator (Lingua's:
        6 x non-embedding parameters + 3.5 x 4 x layers x S x dim / 2 for causal attention), or
        None if this kind has no such figure (``spec show`` then says so)."""
        return None

    def activation_bytes_per_position(self, *, dim: int, bfloat16: bool, checkpointing: Checkpointing) -> float | None:
        """Bytes one stack keeps for its backward pass per position (float32, or under bfloat16
        autocast), with activation checkpointing ``Checkpointing.NONE``, ``SELECTIVE`` or ``FULL``; None if
        unknown (the memory estimate then says so)."""
        return None


@attrs.frozen(kw_only=True)
class PoolerSpec(ComponentSpec):
    """Contracting: fine vectors at boundaries to coarse vectors."""

    @abstractmethod
    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        """The module mapping width ``dim_in`` to ``dim_out``."""

    @abstractmethod
    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        """Parameters of the module."""


@attrs.frozen(kw_only=True)
class UpsamplerSpec(ComponentSpec):
    """Expanding: coarse vectors back to fine positions."""

    @abstractmethod
    def build(self, *, dim_coarse: int, dim_fine: int) -> Upsampler:
        """The module mapping width ``dim_coarse`` to ``dim_fine``."""

    @abstractmethod
    def parameter_count(self, *, dim_coarse: int, dim_fine: int) -> int:
        """Parameters of the module."""


@attrs.frozen(kw_only=True)
class RouterSpec(ComponentSpec):
    """Learned boundaries: which positions of the level below close a segment of this level,
    decided from the level below's encoder output (``aunet.core.modules.Router``)."""

    @abstractmethod
    def build(self, *, dim: int) -> Router:
        """The module reading (B, S, ``dim``) encoder outputs of the level below."""

    @abstractmethod
    def parameter_count(self, *, dim: int) -> int:
        """Parameters of the module."""

    @abstractmethod
    def flops_per_position(self, *, dim: int) -> float:
        """Training FLOPs (forward and backward) per position of the level below, counted like a
        stack's parameter term (6 x parameters for its matrix products)."""

    @property
    @abstractmethod
    def ratio(self) -> float:
        """Positions of the level below per segment the router is trained toward: with the level
        below's contraction, the level's expected contraction (static shapes, FLOPs)."""


@attrs.frozen(kw_only=True)
class AttentionSpec(ComponentSpec):
    """How a stage computes attention (SDPA, flash, flex...)."""

    @abstractmethod
    def resolve(self, *, device: Any) -> AttentionBackend:
        """The backend for ``device``, or an ``aunet.core.errors.AunetError`` that says why it
        cannot run there and which kinds can. Called once, when the model is built or moved."""

    def trains_on(self, *, device: Any, bfloat16: bool) -> str | None:
        """Why a training step (forward and backward) cannot run on ``device`` with this
        backend (``bfloat16``: under bf16 autocast), or None. Checked before training starts."""
        return None
