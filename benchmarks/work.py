"""The work `aunet train` does before it trains, counted and timed: for a new run and for a
resume, the calls of ``resolve_spec`` and those that resolve (fill defaults, measure
contractions), ``check_model``, meta.json reads, the contraction measured on the embedded corpus,
SHA-256 passes over each file of the checkpoint resumed, and the seconds from the command to its
first training step (a warm process: a first resume is run and thrown away, so imports and
torch's lazy modules are not counted).

Functions are matched by name and file through a profile hook, so the same procedure counts an
older aunet's code (the house-for-the-jobs comparison in docs/results.md ran it against the
commit before the job layer's redesign). Each measurement runs in a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

#: What the runs train: the default spec, made wider for a checkpoint whose hashing shows.
SPEC = "aunet2-tiny"
WIDE = ["--set", "levels[1].dim=1024", "--set", "levels[1].stage.layers=6"]
QUIET = ["--device", "cpu", "--set", "train.sample.bytes=0", "--set", "train.eval.final_bytes=1000"]


def _main() -> Any:
    try:
        from aunet.cli.main import main
    except ImportError:  # an older aunet's command line
        from aunet.jobs.cli import main
    return main


def _trainer_module() -> Any:
    try:
        from aunet.jobs.train import trainer
    except ImportError:
        from aunet.jobs import trainer
    return trainer


def count(argv: list[str]) -> dict[str, Any]:
    """Run one command with a profile hook; what it did."""
    calls: Counter = Counter()
    hashed: Counter = Counter()

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        name, file = frame.f_code.co_name, frame.f_code.co_filename
        if file.endswith("core/spec.py") and name in ("resolve_spec", "_resolve", "check_model"):
            calls[name] += 1
        elif name in ("sha256", "_sha256") and file.endswith(("files.py", "checkpoint.py", "checkpoints.py")):
            hashed[str(frame.f_locals.get("path"))] += 1
        elif name == "read_meta" and file.endswith(("checkpoint.py", "checkpoints.py")):
            calls["read_meta"] += 1
        elif name == "embedded_contraction":
            calls[name] += 1

    from aunet.core import spec

    main = _main()
    sys.setprofile(hook)
    try:
        code = main(argv)
    finally:
        sys.setprofile(None)
    # An older aunet resolved on every call; this one returns a resolved spec at once (_resolve
    # is the work).
    calls["resolving"] = calls.pop("_resolve", 0) if hasattr(spec, "_resolve") else calls["resolve_spec"]
    return {"code": code, "calls": dict(calls), "hashed": dict(hashed)}


def start_seconds(warm: str, timed: str, steps: str) -> float:
    """Seconds from ``aunet train --resume`` to its first step, after a warm-up resume."""
    trainer = _trainer_module()
    first: list[float] = []
    original = trainer.Trainer.step

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not first:
            first.append(time.perf_counter())
        return original(self, *args, **kwargs)

    trainer.Trainer.step = step
    main = _main()
    argv = ["--resume", "--steps", steps, "--device", "cpu", "--threads", "1"]
    main(["train", "--out", warm, *argv])
    first.clear()
    began = time.perf_counter()
    main(["train", "--out", timed, *argv])
    return first[0] - began


def _child(*args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.work", *args], capture_output=True, text=True, check=True, timeout=1800
    )
    return json.loads(out.stdout.splitlines()[-1])


def run(rounds: int = 5) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = []
        for name, extra in (("aunet2-tiny", []), ("aunet2-tiny, level 1 dim 1024, 6 layers", WIDE)):
            run_dir = root / "run"
            shutil.rmtree(run_dir, ignore_errors=True)
            fresh = _child("count", "train", "--spec", SPEC, "--steps", "1", "--out", str(run_dir), *QUIET, *extra)
            ckpt = next((run_dir / "checkpoints").glob("step-*"))
            size = sum(p.stat().st_size for p in ckpt.iterdir())
            copy = root / "copy"
            shutil.copytree(run_dir, copy)
            resumed = _child("count", "train", "--out", str(copy), "--resume", "--steps", "2", "--device", "cpu")
            shutil.rmtree(copy)
            passes = [n for p, n in resumed["hashed"].items() if Path(p).parent.name == ckpt.name]
            times = []
            for _ in range(rounds):
                warm, timed = root / "warm", root / "timed"
                for folder in (warm, timed):
                    shutil.rmtree(folder, ignore_errors=True)
                    shutil.copytree(run_dir, folder)
                times.append(_child("start", str(warm), str(timed), "2")["seconds"])
            records.append(
                {
                    "run": name,
                    "checkpoint_bytes": size,
                    "new_run": fresh["calls"],
                    "resume": resumed["calls"],
                    "hash_passes_per_file": sorted(set(passes)),
                    "resume_start_s": statistics.median(times),
                    "resume_start_all_s": times,
                }
            )
        return records


def report(records: list[dict[str, Any]]) -> str:
    lines = []
    for r in records:
        lines.append(f"{r['run']} (checkpoint {r['checkpoint_bytes'] / 2**20:,.0f} MiB)")
        for what in ("new_run", "resume"):
            c = r[what]
            lines.append(
                f"  {what.replace('_', ' '):8}  resolve_spec {c.get('resolve_spec', 0)} calls, "
                f"{c.get('resolving', 0)} resolving; "
                f"check_model {c.get('check_model', 0)}; meta.json reads {c.get('read_meta', 0)}; "
                f"embedded contraction {c.get('embedded_contraction', 0)}"
            )
        lines.append(f"  SHA-256 passes per file of the checkpoint resumed: {r['hash_passes_per_file']}")
        lines.append(f"  resume start (median of {len(r['resume_start_all_s'])}): {r['resume_start_s']:.3f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "count":
        print(json.dumps(count(rest)))
    else:
        print(json.dumps({"seconds": start_seconds(*rest)}))
