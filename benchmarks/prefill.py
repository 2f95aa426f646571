"""Prompt prefill, whole against chunked (``aunet.generate(..., prefill_chunk=N)``): milliseconds
and the memory a prefill adds at its peak, for aunet2-tiny and byte-tiny, 16 rows of 1,000-byte
prompts from the embedded corpus, random weights, one thread.

Time is the median of interleaved rounds in this process. Memory is measured in a fresh process
per configuration (a CPU has no allocator statistics to reset; Linux only): the peak resident set
size during one prefill (``VmHWM``, reset just before it through ``/proc/self/clear_refs``) minus
the size before it, the model built and a short prompt prefilled first, so that what is counted is
what the prefill itself holds at once (attention masks, activations, and the decoding caches its
state allocates), not the weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.timing import interleaved, median

SPECS = ("aunet2-tiny", "byte-tiny")
ROWS = 16
PROMPT = 1000
CHUNKS = (None, 256, 64)


def _setup(spec_name: str, rows: int, prompt: int) -> tuple[Any, Any]:
    """The model (random weights) and its prompt batch: ``rows`` prompts of ``prompt`` bytes."""
    import torch

    import aunet
    from aunet.core.encoding import splitter_encoding
    from aunet.core.resources import read_corpus, spec_path
    from aunet.jobs.inference.generate import _prompt_batch

    torch.manual_seed(0)
    spec = aunet.load_spec(spec_path(spec_name))
    model = aunet.build_model(spec).eval()
    corpus = read_corpus("en_web")
    texts = [corpus[corpus.find(b"\n", 50_000 + 7_919 * r) + 1 :][:prompt] for r in range(rows)]
    encoding = splitter_encoding(spec)
    batch = _prompt_batch(spec, [encoding.prompt(t, spec.model.context - 1) for t in texts], "cpu")
    return model, batch


def _prefill(model: Any, batch: Any, chunk: int | None) -> Any:
    from aunet.core.decoding import new_state, prefill, prefill_chunks

    state = new_state(model, batch[0].shape[0], model.spec.model.context)
    if chunk is None:
        return prefill(model, state, *batch)
    return prefill_chunks(model, state, *batch, chunk=chunk)


def _memory_kib(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the peak since the last reset) of this process, in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}: the memory probe needs Linux")


def _peak_child(spec_name: str, rows: int, prompt: int, chunk: int | None) -> None:
    """In a fresh process: print the peak resident memory one prefill adds, in bytes."""
    import gc

    import torch

    torch.set_num_threads(1)
    model, batch = _setup(spec_name, rows, prompt)
    _prefill(model, tuple(t[:, :8] for t in batch[:2]) + (batch[2].clamp(max=8),), chunk)  # a short one first
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size
    before = _memory_kib("VmRSS")
    _prefill(model, batch, chunk)
    print(json.dumps({"added": (_memory_kib("VmHWM") - before) * 1024}))


def _peak(spec_name: str, rows: int, prompt: int, chunk: int | None) -> int:
    code = f"from benchmarks.prefill import _peak_child; _peak_child({spec_name!r}, {rows}, {prompt}, {chunk!r})"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["added"]


def run(rounds: int = 5, smoke: bool = False) -> list[dict[str, Any]]:
    """``smoke``: 2 rows of 100 bytes, chunks of 16, one round: checks that the script runs."""
    import torch

    torch.set_num_threads(1)
    rows, prompt, chunks = (2, 100, (None, 16)) if smoke else (ROWS, PROMPT, CHUNKS)
    rounds = 1 if smoke else rounds
    setups = {name: _setup(name, rows, prompt) for name in SPECS}
    configs = {
        (name, chunk): (lambda m=model, b=batch, c=chunk: _prefill(m, b, c))
        for name, (model, batch) in setups.items()
        for chunk in chunks
    }
    times = interleaved(configs, rounds=rounds)
    records = []
    for (name, chunk), values in times.items():
        records.append(
            {
                "spec": name,
                "rows": rows,
                "prompt_bytes": prompt,
                "chunk": chunk,
                "ms": round(1e3 * median(values), 1),
                "peak_added_mb": round(_peak(name, rows, prompt, chunk) / 2**20, 1),
                "rounds": rounds,
            }
        )
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'spec':<12} {'rows':>4} {'prompt':>7} {'chunk':>6} {'ms':>9} {'peak added MB':>14}"]
    for r in records:
        chunk = "whole" if r["chunk"] is None else str(r["chunk"])
        lines.append(
            f"{r['spec']:<12} {r['rows']:>4} {r['prompt_bytes']:>7} {chunk:>6} {r['ms']:>9.1f} {r['peak_added_mb']:>14.1f}"
        )
    return "\n".join(lines)
