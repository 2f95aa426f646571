"""Where a decoding step's time goes: eager steps of byte-tiny, bpe-tiny, aunet2-tiny and
aunet3-tiny at 1, 16 and 64 rows, under ``torch.profiler``, by where and by kind.

Every configuration decodes as ``python -m benchmarks generate`` decodes it (the same prompts,
the same replayed continuations, one thread, eager steps). The profiler starts once the prompts
are prefilled (at the choice of the first byte, from the prefill's logits) and runs to the end of
the decode; its figures are per decoding step. Each aten op's own time goes to:

- **where**: the level-0 stages (the byte or token level's encoder and decoder, or a flat model's
  one stage), the coarser stages (every other level's, the trunk included) or outside the stages
  (embedding, poolers, upsamplers, the head, the step's bookkeeping); stages are found with
  forward hooks, so nothing in the model is changed to be profiled;
- **what**: the kind of the outermost op it runs under: attention (``scaled_dot_product_attention``
  and its kernels), matrix products (``linear``, ``matmul``, ``mm`` and the like), cache writes and
  gathers (``index_put_``, ``index_select``, ``index_copy_``) and every other op (masks, norms,
  rotations, views, elementwise work), with the count of such outermost ops per step.

What the ops' own times leave of the profiled step is ``between ops``: the Python of the step and
the walk, dispatch, and the profiler's own cost, which is larger the more ops a step runs. So the
profiled step is slower than the unprofiled one beside it (timed apart, interleaved rounds,
medians), and small ops look dearer than they are; the attention and matrix-product times, long
calls, are close to their unprofiled cost.
"""

from __future__ import annotations

from typing import Any

from benchmarks.generate import NEW, NEW_BPE, _decoder, _models, _rows
from benchmarks.timing import interleaved, median

SPECS = ("byte-tiny", "bpe-tiny", "aunet2-tiny", "aunet3-tiny")
BATCHES = (1, 16, 64)
WHERE = ("level 0 stages", "coarser stages", "outside stages")
KINDS = ("attention", "matrix products", "cache", "other ops")
_ATTENTION = frozenset(
    {
        "scaled_dot_product_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    }
)
_PRODUCTS = frozenset({"linear", "matmul", "mm", "addmm", "bmm", "baddbmm", "mv", "addmv"})
_CACHE = frozenset({"index_put_", "index_put", "_index_put_impl_", "index_select", "index_copy_", "index_copy"})
_RANGE = "aunet.decode_profile."  # the prefix of the ranges the stage hooks open


def kind(op: str) -> str:
    """The kind of an aten op, by name (``aten::mm`` or ``mm``)."""
    name = op.removeprefix("aten::")
    if name in _ATTENTION:
        return "attention"
    if name in _PRODUCTS:
        return "matrix products"
    if name in _CACHE:
        return "cache"
    return "other ops"


def stage_ranges(model: Any) -> list[Any]:
    """Forward hooks that run each of ``model``'s stages inside a profiler range named for its
    place (``WHERE``); the handles, to remove them."""
    import torch

    handles = []
    opened: list[Any] = []
    stages = [(model.trunk, model.depth)]
    stages += [(s, i) for i, s in enumerate(model.encoders)] + [(s, i) for i, s in enumerate(model.decoders)]
    for stage, level in stages:
        label = _RANGE + WHERE[0 if level == 0 else 1]

        def enter(module: Any, args: Any, label: str = label) -> None:
            opened.append(torch.profiler.record_function(label))
            opened[-1].__enter__()

        def leave(module: Any, args: Any, out: Any) -> None:
            opened.pop().__exit__(None, None, None)

        handles += [stage.register_forward_pre_hook(enter), stage.register_forward_hook(leave)]
    return handles


def attribute(events: Any) -> dict[str, dict[str, float]]:
    """Microseconds of aten ops' own time by where (``WHERE``) and kind (``KINDS``), and per place
    the count of outermost ops (``ops``), from a profile's events (``profile.events()``)."""
    out = {where: dict.fromkeys((*KINDS, "ops"), 0.0) for where in WHERE}
    for event in events:
        if not event.name.startswith("aten::"):
            continue
        outermost, where, parent = event, WHERE[2], event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                outermost = parent
            elif parent.name.startswith(_RANGE):
                where = parent.name.removeprefix(_RANGE)
                break
            parent = parent.cpu_parent
        out[where][kind(outermost.name)] += event.self_cpu_time_total
        if outermost is event:
            out[where]["ops"] += 1
    return out


def _profiled(call: Any) -> tuple[Any, float, dict[str, dict[str, float]]]:
    """What ``call(start)`` returns, its wall seconds from ``start()`` (which it calls once its
    prompts are prefilled) under the profiler, and the ops' attribution from then on."""
    import time

    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    began: list[float] = []

    def start() -> None:
        prof.start()
        began.append(time.perf_counter())

    result = call(start)
    wall = time.perf_counter() - began[0]
    prof.stop()
    return result, wall, attribute(prof.events())


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
        calls: dict[tuple[str, int], Any] = {}
        replayed: dict[str, tuple[Any, Any, list[list[int]], int]] = {}
        for name, (model, encoding, _) in models.items():
            if encoding is None:
                ids, new = [list(c) for c in continuations], NEW
            else:
                ids, new = [encoding.tokenizer.encode(c).tolist() for c in continuations], NEW_BPE
            replayed[name] = (model, encoding, ids, new)
            for n in (new, 1):
                calls[(name, n)] = _decoder(model, encoding, prompts, ids, n, "eager")
        times = interleaved(calls, rounds=rounds)  # the unprofiled steps (and a warm-up)
        for name, (model, encoding, ids, new) in replayed.items():
            handles = stage_ranges(model)
            try:
                (decoded, steps), wall, parts = _profiled(
                    lambda start: _decoder(model, encoding, prompts, ids, new, "eager", after_prefill=start)()
                )
            finally:
                for handle in handles:
                    handle.remove()
            first, _ = calls[(name, 1)]()
            per_step = {where: {k: v / steps for k, v in part.items()} for where, part in parts.items()}
            in_ops = sum(per_step[where][k] for where in WHERE for k in KINDS) / 1e3  # ms
            profiled = 1e3 * wall / steps
            unprofiled = 1e3 * (median(times[(name, new)]) - median(times[(name, 1)])) / steps
            records.append(
                {
                    "spec": name,
                    "batch": batch,
                    "steps": steps,
                    "bytes_per_step": round((decoded - first) / steps, 2),
                    "ms_per_step": round(unprofiled, 3),
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


def report(records: list[dict[str, Any]]) -> str:
    """Milliseconds per step: level-0 stages (L0), coarser stages (L1+), outside them (out); per
    place its attention, matrix products, cache writes and gathers, other ops and outermost ops."""
    places = {"level 0 stages": "L0", "coarser stages": "L1+", "outside stages": "out"}
    kinds = {"attention": "attn", "matrix products": "mm", "cache": "cache", "other ops": "other"}
    head = f"{'spec':<12} {'rows':>4} {'ms/step':>8} {'profiled':>9}"
    for place in places.values():
        head += "  " + " ".join(f"{place + ' ' + k:>10}" for k in kinds.values()) + f" {place + ' ops':>8}"
    lines = [head + f" {'between':>8}"]
    for r in records:
        line = f"{r['spec']:<12} {r['batch']:>4} {r['ms_per_step']:>8.2f} {r['profiled_ms_per_step']:>9.2f}"
        for where in WHERE:
            line += "  " + " ".join(f"{r['parts_ms'][where][k]:>10.3f}" for k in KINDS)
            line += f" {r['ops_per_step'][where]:>8.0f}"
        lines.append(line + f" {r['between_ops_ms']:>8.2f}")
    return "\n".join(lines)
