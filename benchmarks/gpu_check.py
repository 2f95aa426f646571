"""The GPU check: one script for a machine with a GPU (sized for 5 minutes on one H200).

1. the GPU-marked tests (``pytest -m gpu``);
2. the attention benchmark at 8,192 bytes (every kind, every masking, forward and backward);
3. the train-step benchmark on the GPU (bytes/s, ratios, host syncs per step);
4. ``aunet profile`` of a 1B-class AU-Net 2 (``paper/aunet2-1b``: widths 512 and 2048) at reduced
   depth (3 byte layers, 4 word layers instead of 25; 8,192-byte rows), per backend, in bf16;
5. decoding: byte-tiny and aunet2-tiny at 1, 16 and 64 rows, eager steps against compiled steps
   captured as CUDA graphs (``python -m benchmarks generate`` on the GPU), with any graph skipped;
6. one training run of aunet2-tiny on one process with ``--parallel fsdp`` over NCCL, bf16 and
   compile (when this aunet has it).

It prints one JSON summary (and each part's records). ``--smoke`` shrinks every size so the
script can be checked on a CPU (``python -m benchmarks gpu-check --device cpu --smoke``): the GPU
tests then skip with their reason and the sizes mean nothing.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _part(name: str, fn: Any, summary: dict[str, Any]) -> None:
    started = time.perf_counter()
    try:
        summary[name] = fn()
    except Exception as exc:  # noqa: BLE001 - one part failing must not hide the others
        summary[name] = {"error": f"{type(exc).__name__}: {exc}"}
    summary.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
    print(f"[gpu-check] {name}: {time.perf_counter() - started:.0f} s", file=sys.__stderr__, flush=True)


def _tests(smoke: bool) -> dict[str, Any]:
    args = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    args += ["tests/test_devices.py", "-k", "cuda_sampling"] if smoke else ["tests"]  # smoke: one, for the wiring
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail)}
    failures = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"returncode": result.returncode, "summary": tail, **counts, "failures": failures[:20]}


def _attention(device: str, smoke: bool) -> list[dict[str, Any]]:
    from benchmarks import attention

    return attention.run(rounds=1 if smoke else 3, device=device, contexts=(256,) if smoke else (8192,))


def _train_step(device: str, smoke: bool) -> list[dict[str, Any]]:
    from benchmarks import train_step

    if smoke:
        return train_step.run(rounds=1, device=device, rows=2, length=128)
    return train_step.run(rounds=5, device=device)


def _profile(device: str, smoke: bool) -> list[dict[str, Any]]:
    import aunet
    from aunet.core.overrides import apply_overrides
    from aunet.jobs.runtime.devices import resolve_device
    from aunet.jobs.train.profiling import profile_backends

    spec = aunet.load_spec("aunet2-tiny" if smoke else "paper/aunet2-1b")
    overrides = ["train.precision=bfloat16"] + ([] if smoke else ["levels[1].stage.layers=4", "train.batch_size=2"])
    spec = apply_overrides(spec, overrides)
    with tempfile.TemporaryDirectory() as folder:
        summaries = profile_backends(
            spec,
            kinds=["sdpa", "flex", "flash"],
            device=resolve_device(device),
            context=256 if smoke else 8192,
            batch=None,
            steps=1 if smoke else 3,
            warmup=1,
            out=Path(folder),
        )
    return [s.to_json() for s in summaries]


def _decoding(device: str, smoke: bool) -> dict[str, Any]:
    """byte-tiny against aunet2-tiny, eager steps against compiled ones (on CUDA, captured as CUDA
    graphs: one launch per step), and whether any graph was skipped (and why)."""
    import torch

    from benchmarks import generate

    # Smoke mode on a CPU leaves compiling out (a minute or two there); tests/test_decode_steps.py
    # checks compiled steps against eager ones.
    modes = ("eager",) if smoke else ("eager", "compiled")
    # Bytes read per byte are the same on any device (the CPU run counts them): not counted here.
    records = generate.run(
        rounds=1 if smoke else 3, smoke=smoke, device=device, specs=("aunet2-tiny",), modes=modes, reads=False
    )
    counters = torch._dynamo.utils.counters
    skips = dict(counters["inductor"].get("cudagraph_skips", {})) if "inductor" in counters else {}
    return {"records": records, "cudagraph_skips": skips}


def _fsdp(device: str, smoke: bool) -> dict[str, Any]:
    from aunet.cli.main import build_parser

    parser = build_parser()
    train = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "train" in a.choices).choices[
        "train"
    ]
    if not any("--parallel" in a.option_strings for a in train._actions):
        return {"skipped": "this aunet has no --parallel"}
    with tempfile.TemporaryDirectory() as folder:
        # In smoke mode (a CPU) nothing is compiled: compiling takes a minute there.
        args = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "1",
            "-m",
            "aunet",
            "train",
            "--parallel",
            "fsdp",
            "--out",
            f"{folder}/run",
            "--steps",
            "4" if smoke else "200",
            "--device",
            device,
            "--set",
            "train.precision=bfloat16",
            "--set",
            f"train.compile={str(not smoke).lower()}",
            "--set",
            "train.shapes=static",
            "--set",
            f"train.eval.final_bytes={4096 if smoke else 65536}",
        ]
        if smoke:
            args += ["--set", "model.context=128", "--set", "train.batch_size=2", "--set", "train.sample.bytes=8"]
        started = time.perf_counter()
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - started
        metrics = (
            [json.loads(line) for line in Path(folder, "run", "metrics.jsonl").read_text().splitlines()]
            if Path(folder, "run", "metrics.jsonl").exists()
            else []
        )
    steps = [m for m in metrics if "loss" in m]
    final = next((m for m in metrics if m.get("final")), {})
    return {
        "returncode": result.returncode,
        "seconds": round(seconds, 1),
        "steps": len(steps),
        "last_loss": steps[-1]["loss"] if steps else None,
        "median_bytes_per_s": sorted(m["bytes_per_s"] for m in steps)[len(steps) // 2] if steps else None,
        "val_bpb": final.get("val_bpb"),
        "stderr_tail": result.stderr[-1500:] if result.returncode else "",
    }


def run(rounds: int = 1, device: str = "cuda", smoke: bool = False) -> list[dict[str, Any]]:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "gpu-check needs a CUDA device; on a CPU run `python -m benchmarks gpu-check --device cpu "
            "--smoke` to check the script itself"
        )
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "device": device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "smoke": smoke,
    }
    # Smoke mode checks this script's own parts; the GPU tests and a torchrun launch are run by the
    # test suite anyway (tests/test_distributed.py), so it leaves those two out.
    if not smoke:
        _part("gpu_tests", lambda: _tests(smoke), summary)
    with redirect_stderr(io.StringIO()):
        _part("attention_8192", lambda: _attention(device, smoke), summary)
        _part("train_step", lambda: _train_step(device, smoke), summary)
        _part("profile_aunet2_1b_reduced", lambda: _profile(device, smoke), summary)
        _part("decoding_graphs", lambda: _decoding(device, smoke), summary)
    if not smoke:
        _part("fsdp_one_process", lambda: _fsdp(device, smoke), summary)
    return [summary]


def report(records: list[dict[str, Any]]) -> str:
    return json.dumps(records[0], indent=1, default=str)
