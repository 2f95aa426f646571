"""``aunet plan``: the paper's fitted scaling laws, turned into a training plan for a budget.

The authors fitted, for a total training compute C (FLOPs), the batch size and learning rate of
byte-level AU-Nets and of their BPE baseline (docs/method.md section 6):

* AU-Net: batch = 0.66 x C^0.321 bytes per step, learning rate = 6.6 x C^-0.176;
* BPE: batch = 29.9 x C^0.231 tokens per step, learning rate = 19.3 x C^-0.177.

With a spec's FLOPs per byte (``aunet spec show``; per token for BPE, divided by bytes per
token), the budget fixes the bytes to train on, hence the steps. The paper's 1B-class
configurations (``specs/paper/``) are listed with the steps the same budget and batch give them.
The paper's scaling-ladder tables (its smaller models) are not part of this project's notes, so
those three are the ladder ``plan`` offers.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

#: (coefficient, exponent) of batch per step and of learning rate against compute C, per family.
LAWS = {
    "aunet": {"batch": (0.66, 0.321), "lr": (6.6, -0.176), "unit": "bytes"},
    "bpe": {"batch": (29.9, 0.231), "lr": (19.3, -0.177), "unit": "tokens"},
}
#: The paper's own runs start at about this many training FLOPs (its 1B-class models at 1e19 and
#: beyond): below it, the laws are extrapolations, and ``plan`` says so.
PAPER_MIN_FLOPS = 1e19
#: Bytes per Llama 3 token on the paper's data, for BPE plans without a measured figure.
PAPER_BYTES_PER_TOKEN = 4.56
PAPER_SPECS = ("paper/aunet2-1b", "paper/aunet3-1b", "paper/aunet4-1b")


@attrs.frozen
class Plan:
    """What the laws say for one budget and one spec."""

    arch: str
    flops: float
    batch: float  # bytes (aunet) or tokens (bpe) per step
    batch_bytes: float
    lr: float
    spec: str
    flops_per_byte: float
    train_bytes: float  # flops / flops_per_byte
    steps: int
    rows_per_step: int  # batch / context, rounded to whole rows (at least 1): what ``steps`` counts
    context: int
    ladder: tuple[dict[str, Any], ...]
    note: str | None = None  # where the budget lies outside the paper's runs

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False) | {"ladder": list(self.ladder), "unit": LAWS[self.arch]["unit"]}


def law(arch: str, what: str, flops: float) -> float:
    coefficient, exponent = LAWS[arch][what]
    return coefficient * flops**exponent


def make_plan(flops: float, *, arch: str = "aunet", spec: Any = None, bytes_per_token: float | None = None) -> Plan:
    """The plan for ``flops`` of training compute with ``spec`` (default: the paper's AU-Net 2)."""
    from aunet.core.accounting import account
    from aunet.jobs.config import load_spec

    if not (math.isfinite(flops) and flops > 0):
        raise ValueError(f"--flops must be a positive number of FLOPs, got {flops}")
    per_token = bytes_per_token or PAPER_BYTES_PER_TOKEN
    batch = law(arch, "batch", flops)
    batch_bytes = batch * per_token if arch == "bpe" else batch
    lr = law(arch, "lr", flops)
    spec = spec if spec is not None else load_spec("paper/aunet2-1b")
    sizes = account(spec)
    per_byte = sizes.flops_per_byte
    train_bytes = flops / per_byte
    rows = max(1, round(batch / spec.model.context))  # the law's batch in whole rows of the spec's context
    step_bytes = rows * spec.model.context * (per_token if arch == "bpe" else 1.0)
    ladder = []
    for name in PAPER_SPECS:
        other = account(load_spec(name))
        steps = flops / other.flops_per_byte / step_bytes
        ladder.append(
            {
                "spec": name,
                "parameters": other.parameters,
                "flops_per_byte": other.flops_per_byte,
                "steps": round(steps),
                "train_bytes": flops / other.flops_per_byte,
            }
        )
    note = None
    if flops < PAPER_MIN_FLOPS:
        orders = math.log10(PAPER_MIN_FLOPS / flops)
        note = (
            f"{flops:.3g} FLOPs is {orders:.1f} orders of magnitude below the paper's smallest runs (about "
            f"{PAPER_MIN_FLOPS:.0e}): these figures extrapolate its laws, they were not measured there"
        )
    return Plan(
        arch,
        flops,
        batch,
        batch_bytes,
        lr,
        spec.name,
        per_byte,
        train_bytes,
        max(1, round(train_bytes / step_bytes)),
        rows,
        spec.model.context,
        tuple(ladder),
        note,
    )


def format_plan(plan: Plan) -> str:
    unit = LAWS[plan.arch]["unit"]
    lines = [
        f"compute: {plan.flops:.3g} FLOPs ({plan.arch} laws of the paper)",
        f"batch: {plan.batch:.3g} {unit} per step" + (f" ({plan.batch_bytes:.3g} bytes)" if unit != "bytes" else ""),
        f"learning rate: {plan.lr:.3g}",
        f"{plan.spec}: {plan.flops_per_byte:.3g} FLOPs per byte -> {plan.train_bytes:.3g} bytes, "
        f"{plan.steps:,} step{'s' if plan.steps != 1 else ''} of {plan.rows_per_step:,} "
        f"row{'s' if plan.rows_per_step != 1 else ''} of {plan.context:,} {unit} (the batch in whole rows: "
        f"{plan.rows_per_step * plan.context:,} {unit})",
        "the paper's 1B-class configurations at this budget and batch:",
    ]
    lines += [
        f"  {r['spec']:<10} {r['parameters'] / 1e9:.2f} B parameters, {r['flops_per_byte']:.3g} FLOPs/byte, "
        f"{r['steps']:,} steps"
        for r in plan.ladder
    ]
    if plan.note:
        lines.append(f"note: {plan.note}")
    return "\n".join(lines)
