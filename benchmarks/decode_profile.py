"""Where a decoding step's time goes: eager steps of byte-tiny, bpe-tiny, aunet2-tiny and
aunet3-tiny at 1, 16 and 64 rows, under ``torch.profiler``, by where and by kind.

Every configuration decodes as ``python -m benchmarks generate`` decodes it (the same prompts,
the same replayed continuations, one thread, eager steps). The profiler starts once the prompts
are prefilled (at the choice of the first byte, from the prefill's logits) and runs to the end of
the decode; its figures are per decoding step. Each aten op's own time goes to:

- **where**: the level-0 stages (the byte or token level's encoder and decoder, or a flat model's
  one stage), the coarser stages (every other level's, the trunk included), the poolers and
  upsamplers, or the rest of the step (embedding, head, the step's bookkeeping, and the replayed
  choice of each next byte); places are the walk's own profiler labels (``aunet.core.labels``,
  what ``aunet profile`` shows), so nothing in the model changes to be profiled;
- **what**: the kind of the outermost op it runs under: attention (``scaled_dot_product_attention``
  and its kernels), matrix products (``linear``, ``matmul``, ``mm`` and the like), indexing (cache
  writes, row gathers and scatters: ``index_put_``, ``index_select``, ``index_copy_``) and every
  other op (masks, norms, rotations, views, elementwise work), with the count of such outermost ops
  per step.

What the ops' own times leave of the profiled step is ``between ops``: the Python of the step and
the walk, dispatch, and the profiler's own cost, which is larger the more ops a step runs. So the
profiled step is slower than the unprofiled one beside it (timed apart, the same steps, interleaved
rounds, medians), and small ops look dearer than they are; attention and matrix products, long
calls, cost about what they cost unprofiled.
"""

from __future__ import annotations

from typing import Any

from benchmarks.generate import _READ_WHOLE, NEW, NEW_BPE, _models, _rows, _steps_decoder
from benchmarks.timing import interleaved_from_start, median, timed_from_start

SPECS = ("byte-tiny", "bpe-tiny", "aunet2-tiny", "aunet3-tiny")
BATCHES = (1, 16, 64)
WHERE = ("level 0 stages", "coarser stages", "poolers and upsamplers", "rest of the step")
KINDS = ("attention", "matrix products", "indexing", "other ops")
# The kinds the generate benchmark's byte counter reads whole, split: attention kernels, products.
_ATTENTION = frozenset(name for name in _READ_WHOLE if "scaled_dot_product" in name)
_PRODUCTS = _READ_WHOLE - _ATTENTION
_INDEXING = frozenset({"index_put_", "index_put", "_index_put_impl_", "index_select", "index_copy_", "index_copy"})


def kind(op: str) -> str:
    """The kind of an aten op, by name (``aten::mm`` or ``mm``)."""
    name = op.removeprefix("aten::")
    if name in _ATTENTION:
        return "attention"
    if name in _PRODUCTS:
        return "matrix products"
    if name in _INDEXING:
        return "indexing"
    return "other ops"


def place(label: str, depth: int) -> str | None:
    """Where (``WHERE``) a label of the walk (``encoder.1``, ``trunk``, ``pool.2``, ...) puts the
    ops under it, for a model of ``depth`` levels above level 0; None for any other range."""
    part, _, index = label.partition(".")
    if part in ("encoder", "decoder") and index.isdigit():
        return WHERE[0 if index == "0" else 1]
    if part == "trunk" and not index:
        return WHERE[0 if depth == 0 else 1]
    if part in ("pool", "upsample") and index.isdigit():
        return WHERE[2]
    return None


def attribute(events: Any, depth: int) -> dict[str, dict[str, float]]:
    """Microseconds of aten ops' own time by where (``WHERE``) and kind (``KINDS``), and per place
    the count of outermost ops (``ops``), from a profile's events (``profile.events()``) of a model
    of ``depth`` levels above level 0, profiled with the walk's labels on."""
    out = {where: dict.fromkeys((*KINDS, "ops"), 0.0) for where in WHERE}
    for event in events:
        if not event.name.startswith("aten::"):
            continue
        outermost, where, parent = event, WHERE[3], event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                outermost = parent
            elif place(parent.name, depth) is not None:
                where = place(parent.name, depth)
                break
            parent = parent.cpu_parent
        out[where][kind(outermost.name)] += event.self_cpu_time_total
        if outermost is event:
            out[where]["ops"] += 1
    return out


def _profiled(call: Any, depth: int) -> tuple[Any, float, dict[str, dict[str, float]]]:
    """``timed_from_start(call)`` with the profiler started at ``start()`` and the walk's labels
    on, and the attribution of the ops from then on (``depth``: the model's, for ``attribute``)."""
    from torch.profiler import ProfilerActivity, profile

    from aunet.core.labels import labelled

    prof = profile(activities=[ProfilerActivity.CPU])
    started: list[bool] = []

    def begin() -> None:
        prof.start()
        started.append(True)

    try:
        with labelled():
            result, wall = timed_from_start(call, begin)
    finally:
        if started:  # a decode that never reached a step started nothing
            prof.stop()
    return result, wall, attribute(prof.events(), depth)


def run(
    rounds: int = 3, smoke: bool = False, specs: tuple[str, ...] = SPECS, batches: tuple[int, ...] | None = None
) -> list[dict[str, Any]]:
    """``smoke``: batches of 1 and 2 rows (unless ``batches`` says), one round: checks that the
    script runs."""
    import torch

    torch.set_num_threads(1)
    batches = batches or ((1, 2) if smoke else BATCHES)
    rounds = 1 if smoke else rounds
    models = _models("cpu", specs)
    records = []
    for batch in batches:
        prompts, continuations = _rows(batch)
        calls: dict[str, Any] = {}  # name -> call(start): decodes, calling start() after the prefill
        for name, (model, encoding, _) in models.items():
            if encoding is None:
                ids, new = [list(c) for c in continuations], NEW
            else:
                ids, new = [encoding.tokenizer.encode(c).tolist() for c in continuations], NEW_BPE
            calls[name] = _steps_decoder(model, encoding, prompts, ids, new, "eager")
        # The unprofiled steps: each configuration once per round, in turn (a warm-up first).
        seconds = interleaved_from_start(calls, rounds=rounds)
        for name, (model, _, _) in models.items():
            (_, steps), wall, parts = _profiled(calls[name], model.depth)
            per_step = {where: {k: v / steps for k, v in part.items()} for where, part in parts.items()}
            in_ops = sum(per_step[where][k] for where in WHERE for k in KINDS) / 1e3  # ms
            profiled = 1e3 * wall / steps
            records.append(
                {
                    "spec": name,
                    "batch": batch,
                    "steps": steps,
                    "ms_per_step": round(1e3 * median(seconds[name]) / steps, 3),
                    "profiled_ms_per_step": round(profiled, 3),
                    "parts_ms": {
                        where: {k: round(v / 1e3, 3) for k, v in part.items() if k != "ops"}
                        for where, part in per_step.items()
                    },
                    "ops_per_step": {where: round(part["ops"], 1) for where, part in per_step.items()},
                    "between_ops_ms": round(profiled - in_ops, 3),
                    "rounds": rounds,
                }
            )
    return records


def totals(record: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """A record's milliseconds per step by kind (over every place) and by place (over every kind)."""
    parts = record["parts_ms"]
    by_kind = {k: sum(part[k] for part in parts.values()) for k in KINDS}
    by_place = {where: sum(parts[where].values()) for where in WHERE}
    return by_kind, by_place


def report(records: list[dict[str, Any]]) -> str:
    """Milliseconds per step: unprofiled, profiled, then the profiled step by kind (and what the
    ops leave, ``between``) and by place; outermost ops per step."""
    kinds = ("attn", "products", "indexing", "other", "between")
    places = ("level 0", "coarser", "pool/up", "rest")
    head = f"{'spec':<12} {'rows':>4} {'ms/step':>8} {'profiled':>9}  " + " ".join(f"{k:>9}" for k in kinds)
    lines = [head + "  " + " ".join(f"{p:>8}" for p in places) + f" {'ops':>5}"]
    for r in records:
        by_kind, by_place = totals(r)
        line = f"{r['spec']:<12} {r['batch']:>4} {r['ms_per_step']:>8.2f} {r['profiled_ms_per_step']:>9.2f}  "
        line += " ".join(f"{v:>9.3f}" for v in (*by_kind.values(), r["between_ops_ms"]))
        line += "  " + " ".join(f"{v:>8.3f}" for v in by_place.values())
        lines.append(line + f" {sum(r['ops_per_step'].values()):>5.0f}")
    return "\n".join(lines)
