"""Training cost per byte of the default recipe's batch shapes: ``aunet train``'s own
``Trainer.step()`` (forward, backward, AdamW) on aunet2-tiny, rows of 1,024 bytes of the embedded
corpus, 1, 2, 4 and 8 rows per step, float32 and bfloat16 autocast, timed interleaved in one
process (medians), each as bytes per second and as a ratio to 4 rows in float32 (the recipe the
default used until 2026-12-02).

Why: the default run is budgeted in steps, and its recipe was chosen for bits per byte at equal
training bytes (docs/results.md, "The default run"); this says what each choice costs in time on the
machine at hand, which absolute minutes on a shared machine cannot.
"""

from __future__ import annotations

from typing import Any

from benchmarks.timing import interleaved, median

ROWS = (1, 2, 4, 8)
PRECISIONS = ("float32", "bfloat16")
BASE = (4, "float32")


def run(rounds: int = 15) -> list[dict[str, Any]]:
    import torch

    import aunet
    from aunet.core.encoding import splitter_encoding
    from aunet.core.overrides import apply_overrides
    from aunet.jobs.data.corpus import load_corpus
    from aunet.jobs.data.packing import TrainingData, encode_documents
    from aunet.jobs.train.trainer import Trainer

    corpus = load_corpus(None)
    base = aunet.load_spec("aunet2-tiny")
    docs = encode_documents(corpus.train, splitter_encoding(base))
    configs = {}
    for rows in ROWS:
        for precision in PRECISIONS:
            spec = apply_overrides(base, [f"train.batch_size={rows}", f'train.precision="{precision}"'])
            model = aunet.build_model(spec)
            data = TrainingData(docs, context=spec.model.context, batch_size=rows, seed=0)
            trainer = Trainer(model.spec, model, data=data, device=torch.device("cpu"))
            trainer.step(0.0)  # first step: allocations, autocast caches
            configs[(rows, precision)] = lambda trainer=trainer: trainer.step(0.5)
    times = interleaved(configs, rounds=rounds)
    length = base.model.context
    base_rate = BASE[0] * length / median(times[BASE])
    records = []
    for (rows, precision), samples in times.items():
        seconds = median(samples)
        rate = rows * length / seconds
        records.append(
            {
                "rows": rows,
                "precision": precision,
                "step_s": round(seconds, 4),
                "bytes_per_s": round(rate, 1),
                "vs_4_rows_float32": round(rate / base_rate, 3),
                "rounds": rounds,
                "threads": torch.get_num_threads(),
            }
        )
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'rows':>4} {'precision':<9} {'step':>8} {'bytes/s':>9} {'vs 4 rows fp32':>15}"]
    for r in records:
        lines.append(
            f"{r['rows']:>4} {r['precision']:<9} {1000 * r['step_s']:>6.0f}ms {r['bytes_per_s']:>9,.0f} "
            f"{r['vs_4_rows_float32']:>14.2f}x"
        )
    return "\n".join(lines)
