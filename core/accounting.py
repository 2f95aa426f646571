"""Parameters and FLOPs per byte of a spec, without building it (AUNET.md section 7).

The paper's accounting: one stack costs 6 x (non-embedding parameters) + 6 x dim x layers x S
FLOPs per position (forward and backward), S the attended length (the stage's share of the
context, or its window); an AU-Net's FLOPs per byte sum each stack's FLOPs divided by k_i, the
bytes per position at its level (1 for bytes). That sum covers the stacks only. We also report the
poolers, upsamplers and output head, which the paper's figure leaves out, as ``flops_per_byte_all``.
"""

from __future__ import annotations

import functools

import attrs
import numpy as np

from aunet.core.levels import SplitterStack
from aunet.core.spec import Spec, resolve_spec
from aunet.core.tokens import VOCAB_SIZE


@functools.lru_cache(maxsize=32)
def measured_contraction(stack: SplitterStack, corpus: str = "en_web") -> tuple[float, ...]:
    """Bytes per position at each level 1..L, measured on an embedded corpus split by the stack
    (BOS counted, as the model sees it, for each chapter-sized document of 4 KB)."""
    from aunet.core.resources import read_corpus

    data = read_corpus(corpus)
    levels = stack.levels(data)
    counts = np.bincount(levels, minlength=stack.depth + 1)
    at_least = np.cumsum(counts[::-1])[::-1]
    n_docs = max(1, len(data) // 4096)
    return tuple(float(len(data) + n_docs) / float(at_least[i] + n_docs) for i in range(1, stack.depth + 1))


def level_contraction(spec: Spec) -> tuple[float, ...]:
    """(1, k_1, ..., k_L): bytes per position at every level, from the spec where it says, else
    measured on the embedded corpus with the spec's own splitters."""
    given = [level.contraction for level in spec.levels[1:]]
    if all(k is not None for k in given):
        return (1.0, *given)
    measured = measured_contraction(spec.splitter_stack())
    return (1.0, *(k if k is not None else m for k, m in zip(given, measured)))


@attrs.frozen
class Accounting:
    """Sizes of one spec."""

    parameters_by_component: dict[str, int]
    contraction: tuple[float, ...]  # bytes per position at levels 0..L
    contraction_measured: bool  # some k_i were measured on the embedded corpus
    context: int
    flops_per_byte: float  # the paper's accounting: stacks only
    flops_per_byte_all: float  # plus poolers, upsamplers and the output head

    @property
    def parameters(self) -> int:
        return sum(self.parameters_by_component.values())

    def to_json(self) -> dict:
        return {
            "parameters": self.parameters,
            "parameters_by_component": self.parameters_by_component,
            "flops_per_byte": self.flops_per_byte,
            "flops_per_byte_all": self.flops_per_byte_all,
            "contraction": list(self.contraction),
            "contraction_measured": self.contraction_measured,
            "context": self.context,
        }


def account(spec: Spec) -> Accounting:
    """Parameters per component and FLOPs per byte. The spec must pass ``check_model``."""
    spec = resolve_spec(spec)
    levels = spec.levels
    depth = spec.depth
    dims = [level.dim for level in levels]
    k = level_contraction(spec)
    context = spec.model.context
    params: dict[str, int] = {"embedding": VOCAB_SIZE * dims[0]}
    flops = 0.0
    extra = 6.0 * dims[0] * VOCAB_SIZE  # the output head, per byte
    for i, level in enumerate(levels):
        stack = level.stage.parameter_count(dim=dims[i])
        per_position = level.stage.flops_per_position(dim=dims[i], attended=context / k[i])
        if i < depth:
            params[f"levels[{i}].encoder"] = stack
            params[f"levels[{i}].decoder"] = stack
            flops += 2 * per_position / k[i]
        else:
            params[f"levels[{i}].trunk"] = stack
            flops += per_position / k[i]
        if i:
            pool = level.pooler.parameter_count(dim_in=dims[i - 1], dim_out=dims[i])
            up = level.upsampler.parameter_count(dim_coarse=dims[i], dim_fine=dims[i - 1])
            params[f"levels[{i}].pooler"] = pool
            params[f"levels[{i}].upsampler"] = up
            extra += 6.0 * (pool + up) / k[i]
    params["output"] = dims[0] + dims[0] * VOCAB_SIZE  # final norm and head
    measured = any(level.contraction is None for level in levels[1:])
    return Accounting(params, k, measured, context, flops, flops + extra)
