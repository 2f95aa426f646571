"""The whole UDHR suite through ``aunet eval --suite udhr``: 525 texts, about 8 MB.

The tests check the suite's logic on three texts; this is the full run, timed. It trains the
test suite's tiny spec for 2 steps on the embedded corpus (the model's quality is not the point:
the time and the shape of the report are), then evaluates every text with 32 rows per forward on
one thread and on every thread, interleaved once each.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

SPEC = """
[model]
context = 1024
[[levels]]
dim = 64
stage = { kind = "transformer", layers = 1, head_dim = 32, window = 512 }
[[levels]]
dim = 128
splitter = "whitespace"
stage = { kind = "transformer", layers = 1, head_dim = 32 }
[train]
batch_size = 2
sample = { bytes = 0 }
eval = { final_bytes = 4096 }
"""


def run(rounds: int = 1) -> list[dict[str, Any]]:
    import torch

    from aunet.cli.main import main

    records = []
    with tempfile.TemporaryDirectory() as folder:
        spec = f"{folder}/spec.toml"
        with open(spec, "w") as f:
            f.write(SPEC)
        with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
            main(["train", "--spec", spec, "--out", f"{folder}/run", "--steps", "2", "--device", "cpu"])
        threads = torch.get_num_threads()
        for _ in range(rounds):
            for count in sorted({1, threads}):
                out = io.StringIO()
                torch.set_num_threads(count)
                started = time.perf_counter()
                with redirect_stdout(out), redirect_stderr(io.StringIO()):
                    main(["eval", "--ckpt", f"{folder}/run", "--suite", "udhr", "--json", "--batch-size", "32"])
                seconds = time.perf_counter() - started
                report = json.loads(out.getvalue())
                n_bytes = sum(x["bytes"] for x in report["languages"])
                records.append(
                    {
                        "threads": count,
                        "texts": len(report["languages"]),
                        "bytes": n_bytes,
                        "seconds": round(seconds, 1),
                        "bytes_per_s": round(n_bytes / seconds),
                    }
                )
        torch.set_num_threads(threads)
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'threads':>7} {'texts':>6} {'bytes':>11} {'seconds':>8} {'bytes/s':>9}"]
    for r in records:
        lines.append(f"{r['threads']:>7} {r['texts']:>6} {r['bytes']:>11,} {r['seconds']:>8.1f} {r['bytes_per_s']:>9,}")
    return "\n".join(lines)
