"""Poolers against each other: ``select`` (the paper's), ``mean`` and ``attention``, same model,
same training time, on the embedded corpus.

``python -m benchmarks pooler-experiment [--minutes M] [--json]`` trains aunet2-tiny three times,
changing only its word level's pooler, each for the same minutes of its own training time, in
turns of 100 steps (``aunet.jobs.experiments.turns``: each turn resumes its run exactly, so a drift of this
shared machine's speed falls on all three alike), then evaluates each on the whole validation
split (371,205 bytes), beside ``xz -9e``. Run directories go to ``runs/pooler-experiment/``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

OUT = Path("runs") / "pooler-experiment"
POOLERS = ("select", "mean", "attention")


def run(minutes: float = 8.0) -> list[dict[str, Any]]:
    import aunet
    from aunet.core.overrides import apply_overrides
    from aunet.jobs.data.corpus import load_corpus, xz_bits_per_byte
    from aunet.jobs.data.packing import encode_documents
    from aunet.jobs.experiments.turns import train_in_turns
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runs.directory import load_run

    base = aunet.load_spec("aunet2-tiny")
    variants = {
        kind: apply_overrides(base, [f'levels[1].pooler={{ kind = "{kind}" }}', f"name=aunet2-tiny-{kind}"])
        for kind in POOLERS
    }
    done = train_in_turns(variants, data=None, out=OUT / time.strftime("%Y%m%d-%H%M%S"), minutes=minutes)
    corpus = load_corpus(None)
    xz = xz_bits_per_byte(corpus.validation_bytes)
    records = []
    for kind in POOLERS:
        out = done.outs[kind]
        loaded = load_run(out)
        docs = encode_documents(corpus.validation, loaded.encoding)
        result = evaluate(loaded.model, loaded.encoding, docs, context=loaded.spec.model.context, batch_size=8)
        trained = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        records.append(
            {
                "pooler": kind,
                "minutes": minutes,
                "steps": loaded.step,
                "turns": done.turns[kind],
                "parameters": sum(p.numel() for p in loaded.model.parameters()),
                "median_bytes_per_s": round(statistics.median(r["bytes_per_s"] for r in trained)),
                "val_bpb": result.bpb,
                "val_bytes": result.bytes,
                "xz_bpb": xz,
                "run": str(out),
            }
        )
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'pooler':<10} {'params':>10} {'steps':>6} {'bytes/s':>8} {'val bpb':>8}"]
    for r in records:
        lines.append(
            f"{r['pooler']:<10} {r['parameters']:>10,} {r['steps']:>6} {r['median_bytes_per_s']:>8,} "
            f"{r['val_bpb']:>8.4f}"
        )
    if records:
        lines.append(f"xz -9e on the same {records[0]['val_bytes']:,} bytes: {records[0]['xz_bpb']:.4f}")
    return "\n".join(lines)
