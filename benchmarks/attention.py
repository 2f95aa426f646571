"""Attention backends alone: every kind usable on the device x context (1,024, 4,096, 8,192 bytes)
x masking (one document; packed documents of about 1,000 bytes; a 512-byte window) x forward and
forward + backward. Shapes of the paper's byte stage: 8 heads of 64, one row. Interleaved rounds,
medians, the ratio to ``sdpa`` in the same run, and the peak memory of one call (the CUDA
allocator's peak; on a CPU, the largest total allocated in the profiler's memory events).

On CUDA the inputs are bfloat16 (``flash`` needs it; ``math`` computes in float32 anyway); on a
CPU they are float32 and ``flex`` runs forward only (torch has no FlexAttention backward there)
and unfused; ``flash`` needs CUDA.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.timing import interleaved, median

CONTEXTS = (1024, 4096, 8192)
MASKS = ("one-document", "packed", "window-512")
HEADS, HEAD_DIM = 8, 64


def _backends(device: Any) -> dict[str, Any]:
    from aunet.core.errors import AunetError
    from aunet.plugins.attention import FlashSpec, FlexSpec, MathSpec, SdpaSpec

    out = {}
    for spec in (SdpaSpec(), MathSpec(), FlexSpec(), FlashSpec()):
        try:
            out[spec.kind] = (spec, spec.resolve(device=device))
        except AunetError:
            continue  # flash without CUDA
    return out


def _peak(fn: Any, device: Any) -> int:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    return max((int(e["args"].get("Total Allocated", 0)) for e in events if e.get("name") == "[memory]"), default=0)


def run(rounds: int = 3, device: str = "auto", contexts: tuple[int, ...] = CONTEXTS) -> list[dict[str, Any]]:
    import torch

    from aunet.core.modules import Layout
    from aunet.jobs.runtime.devices import resolve_device

    device = resolve_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backends = _backends(device)
    configs: dict[tuple, Any] = {}
    skipped = []
    for context in contexts:
        for mask in MASKS:
            doc = None
            if mask == "packed":
                doc = (torch.arange(context, device=device) // 1000)[None]  # documents of 1,000 positions
            window = 512 if mask == "window-512" else None
            for kind, (spec, backend) in backends.items():
                plan = backend.plan(Layout(doc=doc), batch=1, length=context, window=window, device=device)
                for passes in ("forward", "forward+backward"):
                    why = (
                        spec.trains_on(device=device, bfloat16=dtype == torch.bfloat16) if passes != "forward" else None
                    )
                    if why:
                        skipped.append(
                            {"kind": kind, "context": context, "masking": mask, "passes": passes, "skipped": why}
                        )
                        continue
                    q, k, v = (
                        torch.randn(
                            1, HEADS, context, HEAD_DIM, device=device, dtype=dtype, requires_grad=passes != "forward"
                        )
                        for _ in range(3)
                    )

                    def call(backend=backend, plan=plan, q=q, k=k, v=v, passes=passes) -> None:
                        if passes == "forward":
                            with torch.no_grad():
                                backend(q, k, v, plan)
                        else:
                            backend(q, k, v, plan).float().square().mean().backward()
                        if device.type == "cuda":
                            torch.cuda.synchronize()

                    configs[(kind, context, mask, passes)] = call
    times = interleaved(configs, rounds=rounds)
    records = []
    for (kind, context, mask, passes), fn in configs.items():
        seconds = median(times[(kind, context, mask, passes)])
        base = times.get(("sdpa", context, mask, passes))
        records.append(
            {
                "kind": kind,
                "context": context,
                "masking": mask,
                "passes": passes,
                "device": str(device),
                "ms": round(seconds * 1000, 3),
                "vs_sdpa": round(seconds / median(base), 3) if base else None,
                "peak_mib": round(_peak(fn, device) / 2**20, 1),
                "rounds": rounds,
            }
        )
    return records + skipped


def report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'kind':<6} {'context':>7} {'masking':<13} {'passes':<17} {'ms':>10} {'vs sdpa':>8} {'peak MiB':>9}"]
    for r in records:
        if "skipped" in r:
            lines.append(
                f"{r['kind']:<6} {r['context']:>7} {r['masking']:<13} {r['passes']:<17} skipped: {r['skipped'][:60]}"
            )
            continue
        ratio = f"{r['vs_sdpa']:.2f}x" if r["vs_sdpa"] is not None else ""
        lines.append(
            f"{r['kind']:<6} {r['context']:>7} {r['masking']:<13} {r['passes']:<17} {r['ms']:>10,.1f} "
            f"{ratio:>8} {r['peak_mib']:>9,.1f}"
        )
    return "\n".join(lines)
