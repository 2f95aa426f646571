"""Word splitters against script splitters, same model, same wall time, English and Chinese.

``python -m benchmarks script-experiment [--minutes M] [--json]`` trains aunet2-tiny twice on the
same mix of English and Chinese: once with its word splitter (``whitespace``, the paper's) and
once with ``script`` in its place, each for the same number of minutes, then measures bits per
byte on held-out English and held-out Chinese, beside xz -9e on the same bytes.

The mix: the embedded English corpus (80 books) and the two embedded Chinese corpora (Song ci
poems and classical prose), cut into documents of about 40 KB, all shuffled together with a fixed
seed and split like any corpus (document i is held out iff i % 10 == 9). Run directories go to
``runs/script-experiment/`` (one per splitter).
"""

from __future__ import annotations

import json
import lzma
import random
import time
from pathlib import Path
from typing import Any

CHUNK = 40_000
OUT = Path("runs") / "script-experiment"


def mixed_documents() -> list[tuple[str, bytes]]:
    """(language, text) documents of the English and Chinese corpora, shuffled."""
    from aunet.core.data import embedded_documents
    from aunet.core.resources import CORPORA

    docs = [("en", d.data) for d in embedded_documents()]
    for name in ("zh_songci", "zh_classics_prose"):
        text = lzma.open(CORPORA / f"{name}.txt.xz").read()
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


def run(minutes: float = 9.4, rounds: int = 1) -> list[dict[str, Any]]:
    """Train both variants for ``minutes`` each and evaluate them (``rounds`` is unused: one run
    of each is the experiment)."""
    import attrs

    import aunet
    from aunet.core.data import Document, encode_documents, xz_bits_per_byte
    from aunet.core.evaluate import evaluate
    from aunet.core.resources import spec_path
    from aunet.core.train import apply_overrides, load_run_model, train

    docs = mixed_documents()
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / "mix.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for language, text in docs:
            f.write(json.dumps({"text": text.decode("utf-8"), "language": language}, ensure_ascii=False) + "\n")
    held_out = {lang: [Document(f"{lang}{i}", t) for i, (lang2, t) in enumerate(docs) if i % 10 == 9 and lang2 == lang]
                for lang in ("en", "zh")}  # fmt: skip
    base = aunet.load_spec(spec_path("aunet2-tiny"))
    variants = {
        "whitespace": base,
        "script": apply_overrides(base, ["levels[1].splitter=script", "name=aunet2-tiny-script"]),
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    records = []
    for name, spec in variants.items():
        spec = attrs.evolve(spec, train=attrs.evolve(spec.train, eval_every=10**9, sample_bytes=0))
        out = OUT / f"{name}-{stamp}"
        summary = train(spec, data=data, out=out, minutes=minutes)
        run_spec, model, _ = load_run_model(out)
        stack = run_spec.splitter_stack()
        record: dict[str, Any] = {"splitter": name, "minutes": minutes, "steps": summary.step,
                                  "bytes_seen": summary.step * spec.train.batch_size * spec.model.context,
                                  "run": str(out)}  # fmt: skip
        for lang, lang_docs in held_out.items():
            result = evaluate(model, encode_documents(lang_docs, stack), context=run_spec.model.context,
                              batch_size=spec.train.batch_size)  # fmt: skip
            record[f"{lang}_bpb"] = result.bpb
            record[f"{lang}_bytes"] = result.bytes
            record[f"{lang}_bytes_per_segment"] = list(result.bytes_per_segment)
            record[f"{lang}_xz_bpb"] = xz_bits_per_byte(b"".join(d.data for d in lang_docs))
        records.append(record)
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'splitter':<11} {'steps':>6} {'English bpb':>12} {'Chinese bpb':>12} {'en B/seg':>9} {'zh B/seg':>9}"]
    for r in records:
        lines.append(f"{r['splitter']:<11} {r['steps']:>6} {r['en_bpb']:>12.4f} {r['zh_bpb']:>12.4f} "
                     f"{r['en_bytes_per_segment'][0]:>9.2f} {r['zh_bytes_per_segment'][0]:>9.2f}")  # fmt: skip
    if records:
        r = records[0]
        lines.append(f"xz -9e      {'':>6} {r['en_xz_bpb']:>12.4f} {r['zh_xz_bpb']:>12.4f}   "
                     f"(held out: {r['en_bytes']:,} English bytes, {r['zh_bytes']:,} Chinese bytes)")  # fmt: skip
    return "\n".join(lines)
