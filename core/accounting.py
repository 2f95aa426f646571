"""Parameters and FLOPs per byte of a spec, without building it (docs/method.md section 7).

The paper's accounting: one stack costs 6 x (non-embedding parameters) + 6 x dim x layers x S
FLOPs per position (forward and backward), S the attended length (the stage's share of the
context, or its window); an AU-Net's FLOPs per byte sum each stack's FLOPs divided by k_i, the
bytes per position at its level (1 for bytes). That sum covers the stacks only. We also report the
poolers, upsamplers and output head, which the paper's figure leaves out, as ``flops_per_byte_all``.
"""

from __future__ import annotations

import attrs

from aunet.core.spec import Spec, resolve_spec
from aunet.core.tokens import VOCAB_SIZE


def level_contraction(spec: Spec) -> tuple[float, ...]:
    """(1, k_1, ..., k_L): bytes per position at every level of a resolved spec."""
    return (1.0, *(level.contraction for level in spec.levels[1:]))


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
    """Parameters per component and FLOPs per byte. The spec must pass ``check_model``;
    contractions it leaves unset are measured on the embedded corpus (and reported as such)."""
    measured = any(level.contraction is None for level in spec.levels[1:])
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
    return Accounting(params, k, measured, context, flops, flops + extra)
