"""Word splitters against script splitters, same model, same wall time, English and Chinese.

``python -m benchmarks script-experiment [--minutes M] [--json]`` trains aunet2-tiny twice on the
same mix of English and Chinese: once with its word splitter (``whitespace``, the paper's) and
once with ``script`` in its place, each for the same minutes of training time, then measures bits
per byte on held-out English and held-out Chinese, beside xz -9e on the same bytes. The two runs
take turns of 100 steps (each turn resumes its run exactly, and only step time counts against the
budget), so that drifts in this shared machine's speed fall on both alike.

The mix: the embedded English corpus (80 books) and the two embedded Chinese corpora (Song ci
poems and classical prose), cut into documents of about 40 KB, all shuffled together with a fixed
seed and split like any corpus (document i is held out iff i % 10 == 9). Run directories go to
``runs/script-experiment/`` (one per splitter).
"""

from __future__ import annotations

import json
import lzma
import random
import statistics
import time
from pathlib import Path
from typing import Any

CHUNK = 40_000
SLICE_STEPS = 100  # steps per turn
OUT = Path("runs") / "script-experiment"


def mixed_documents() -> list[tuple[str, bytes]]:
    """(language, text) documents of the English and Chinese corpora, shuffled."""
    from aunet.core.resources import CORPORA
    from aunet.jobs.data.corpus import embedded_documents

    docs = [("en", d.data) for d in embedded_documents()]
    for name in ("zh_songci", "zh_classics_prose"):
        with lzma.open(CORPORA / f"{name}.txt.xz") as f:
            text = f.read()
        paragraphs = text.split(b"\n\n")
        chunk: list[bytes] = []
        size = 0
        for paragraph in paragraphs:
            chunk.append(paragraph)
            size += len(paragraph) + 2
            if size >= CHUNK:
                docs.append(("zh", b"\n\n".join(chunk)))
                chunk, size = [], 0
        if chunk:
            docs.append(("zh", b"\n\n".join(chunk)))
    random.Random(0).shuffle(docs)
    return docs


def run(minutes: float = 9.4) -> list[dict[str, Any]]:
    """Train both variants for ``minutes`` each and evaluate them on the held-out documents."""

    import aunet
    from aunet.core.encoding import splitter_encoding
    from aunet.core.overrides import apply_overrides
    from aunet.core.resources import spec_path
    from aunet.jobs.data.corpus import load_corpus, xz_bits_per_byte
    from aunet.jobs.data.packing import encode_documents
    from aunet.jobs.experiments.turns import train_in_turns
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runs.directory import load_run

    docs = mixed_documents()
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / "mix.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"text": text.decode("utf-8"), "language": language}, ensure_ascii=False) + "\n"
            for language, text in docs
        )
    language = {text: lang for lang, text in docs}
    validation = load_corpus(data).validation  # the corpus's own split, as training saw it
    held_out = {lang: [d for d in validation if language[d.data] == lang] for lang in ("en", "zh")}
    base = aunet.load_spec(spec_path("aunet2-tiny"))
    variants = {
        "whitespace": base,
        "script": apply_overrides(base, ["levels[1].splitter=script", "name=aunet2-tiny-script"]),
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # The two runs take turns, 100 steps at a time (each turn resumes its run exactly), so that the
    # drift of this shared machine's speed falls on both alike (aunet.jobs.experiments.turns).
    done = train_in_turns(variants, data=data, out=OUT / stamp, minutes=minutes)
    outs, slices = done.outs, done.turns
    records = []
    for name in variants:
        out = outs[name]
        loaded = load_run(out)
        run_spec, model = loaded.spec, loaded.model
        encoding = splitter_encoding(run_spec)
        t = run_spec.train
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        trained = [r for r in metrics if "loss" in r]
        final_step = next(r["step"] for r in metrics if r.get("final"))
        record: dict[str, Any] = {
            "splitter": name,
            "minutes": minutes,
            "steps": final_step,
            "bytes_seen": final_step * t.batch_size * t.grad_accum * run_spec.model.context,
            "turns": slices[name],
            "median_bytes_per_s": statistics.median(r["bytes_per_s"] for r in trained),
            "run": str(out),
        }
        for lang, lang_docs in held_out.items():
            result = evaluate(
                model,
                encoding,
                encode_documents(lang_docs, encoding),
                context=run_spec.model.context,
                batch_size=t.batch_size,
            )
            record[f"{lang}_bpb"] = result.bpb
            record[f"{lang}_bytes"] = result.bytes
            record[f"{lang}_bytes_per_segment"] = list(result.bytes_per_segment)
            record[f"{lang}_xz_bpb"] = xz_bits_per_byte(b"".join(d.data for d in lang_docs))
        records.append(record)
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [
        f"{'splitter':<11} {'steps':>6} {'bytes/s':>8} {'English bpb':>12} {'Chinese bpb':>12} {'en B/seg':>9} "
        f"{'zh B/seg':>9}"
    ]
    for r in records:
        lines.append(
            f"{r['splitter']:<11} {r['steps']:>6} {r['median_bytes_per_s']:>8,.0f} {r['en_bpb']:>12.4f} "
            f"{r['zh_bpb']:>12.4f} {r['en_bytes_per_segment'][0]:>9.2f} {r['zh_bytes_per_segment'][0]:>9.2f}"
        )
    if records:
        r = records[0]
        lines.append(
            f"xz -9e      {'':>6} {'':>8} {r['en_xz_bpb']:>12.4f} {r['zh_xz_bpb']:>12.4f}   "
            f"(held out: {r['en_bytes']:,} English bytes, {r['zh_bytes']:,} Chinese bytes)"
        )
    return "\n".join(lines)
