"""Reliability trials: the failures of many processes, signals and memory, each provoked many
times in fresh processes, counted as held or broken (the table of docs/results.md, "Reliability trials").

* ``save-fails/P``: a disk that fills at the first checkpoint (``RLIMIT_FSIZE``), on one process or
  two (``aunet launch``, DDP or FSDP2). Held: every process ends within two minutes with one
  ``aunet: error:`` line and status 2, no traceback, no temporary folder left.
* ``concurrent-starts``: four new runs started at once on one ``--out``. Held: exactly one runs
  (status 0, each step in ``metrics.jsonl`` once, its spec in ``spec.toml``), the others refused.
* ``SIGNAL/P``: SIGTERM, SIGHUP or SIGINT at a random step of a 24-step run on one process or two
  (``aunet launch``, DDP). Held: status 128 + the signal, the newest checkpoint is the last logged
  step and verifies, and the run resumed on as many processes ends with the losses of an
  uninterrupted run, bit for bit.
* ``corpus-peak``: resident memory a corpus held in memory peaks at, per byte of its text
  (JSON lines of 0.5 MB documents, one long document). Held: at most 3.
* ``stream-1gib``: a single-document 1 GiB ``.txt`` streamed through 3 training steps. Held: peak
  resident memory under 800 MiB.
* ``kit-mutants``: every kit against its mutants (``tests/mutants.py``), each run fresh and
  randomized. Held: the mutant is caught.

``python -m benchmarks trust [--rounds N]``: N trials of each (default 5; the kits 20).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import TEXT
from conftest import TINY as SPEC

STEPS = 24
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _aunet(args: list[str], cwd: Path, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aunet", *args],
        cwd=cwd,
        env={**ENV, "TMPDIR": str(cwd)},
        capture_output=True,
        text=True,
        **kwargs,
    )


def _launcher(processes: int) -> list[str]:
    return ["launch", "--standalone", "--nproc-per-node", str(processes)] if processes > 1 else []


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def _limit_files() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))


def save_fails(folder: Path, parallel: str, trial: int) -> tuple[bool, str]:
    out = f"full-{parallel}-{trial}"
    processes = 1 if parallel == "none" else 2
    args = [*_launcher(processes), "train", "--spec", "spec.toml", "--data", "c.txt", "--out", out, "--steps", "8"]
    if processes > 1:
        args += ["--parallel", parallel]
    started = time.perf_counter()
    try:
        result = _aunet(args, folder, preexec_fn=_limit_files, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "hung for 2 minutes"
    errors = [line for line in result.stderr.splitlines() if line.startswith("aunet: error:")]
    left = list((folder / out / "checkpoints").glob(".tmp-*"))
    held = result.returncode == 2 and len(errors) == processes and "Traceback" not in result.stderr and not left
    return held, f"{time.perf_counter() - started:.1f} s, {len(errors)} error line(s), status {result.returncode}"


def concurrent_starts(folder: Path, trial: int) -> tuple[bool, str]:
    out = folder / f"shared-{trial}"
    racers = []
    for i in range(4):
        spec = folder / f"racer{i}.toml"
        spec.write_text(f'name = "racer{i}"\n' + SPEC)
        racers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aunet",
                    "train",
                    "--spec",
                    str(spec),
                    "--data",
                    str(folder / "c.txt"),
                    "--out",
                    str(out),
                    "--steps",
                    "2",
                ],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    codes = [(r.wait(timeout=300), r.stderr.read()) for r in racers]
    winners = [i for i, (code, _) in enumerate(codes) if code == 0]
    refused = all(code == 2 and "Traceback" not in err for i, (code, err) in enumerate(codes) if i not in winners)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    held = (
        len(winners) == 1 and refused and steps == [1, 2] and f'"racer{winners[0]}"' in (out / "spec.toml").read_text()
    )
    return held, f"winners {winners}, statuses {[c for c, _ in codes]}"


def signalled(
    folder: Path, sent: int, processes: int, trial: int, reference: list[float], rng: random.Random
) -> tuple[bool, str]:
    from aunet.jobs.runs import checkpoint

    out = folder / f"sig-{sent}-{processes}-{trial}"
    parallel = ["--parallel", "ddp"] if processes > 1 else []
    args = [
        *_launcher(processes),
        "train",
        "--spec",
        "spec.toml",
        "--data",
        "c.txt",
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        *parallel,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aunet", *args],
        cwd=folder,
        env={**ENV, "TMPDIR": str(folder)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    at = rng.randint(2, STEPS - 4)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"loss"') >= at:
            break
        time.sleep(0.005)
    time.sleep(rng.random() * 0.05)  # anywhere in the next step
    proc.send_signal(sent)
    _, _err = proc.communicate(timeout=120)
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    saved = checkpoint.latest(out)
    ok = proc.returncode == 128 + sent and saved is not None and saved.name == checkpoint.checkpoint_name(logged[-1])
    if ok:
        checkpoint.verify(saved)
        resumed = _aunet([*_launcher(processes), "train", "--out", str(out), "--resume"], folder, timeout=300)
        ok = resumed.returncode == 0 and _losses(out) == reference
    return ok, f"signal at step {logged[-1] if logged else None}, status {proc.returncode}"


CORPUS_PEAK = (ROOT / "tests" / "test_trust_paths.py").read_text().split('CORPUS_PEAK = """')[1].split('"""')[0]


def corpus_peak(folder: Path) -> list[tuple[str, float]]:
    import numpy as np

    rng = np.random.default_rng(0)
    words = np.array(TEXT.split())
    out = []
    for name, docs, size in (
        ("48 JSON lines of 0.5 MB", 48, 90_000),
        ("400 JSON lines of 0.25 MB", 400, 45_000),
        ("one 24 MB document", 1, 4_400_000),
        ("one 96 MB document", 1, 17_600_000),
    ):
        texts = [" ".join(words[rng.integers(0, len(words), size)]) for _ in range(docs)]
        path = folder / ("corpus.jsonl" if docs > 1 else "corpus.txt")
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts) if docs > 1 else texts[0])
        result = subprocess.run(
            [sys.executable, "-c", CORPUS_PEAK, str(path)], capture_output=True, text=True, env=ENV, timeout=600
        )
        peak = json.loads(result.stdout.splitlines()[-1])["peak"]
        out.append((name, peak / sum(len(t.encode()) for t in texts)))
        path.unlink()
    return out


def stream_1gib(folder: Path) -> tuple[bool, str]:
    big = folder / "book.txt"
    block = (SPEC * 200).encode()[: 1 << 20]
    with open(big, "wb") as f:
        f.writelines(block for _ in range(1024))
    spec = folder / "stream.toml"
    spec.write_text(SPEC + 'data = { stream = "on", buffer_bytes = 4194304 }\n')
    script = (
        "import sys\nfrom aunet.cli.main import main\ncode = main(sys.argv[1:])\n"
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print('maxrss_kib', hwm, file=sys.stderr)\nsys.exit(code)\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "train",
            "--spec",
            str(spec),
            "--data",
            str(big),
            "--out",
            str(folder / "stream-run"),
            "--steps",
            "3",
            "--set",
            "train.eval.final_bytes=20000",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    big.unlink()
    peak = int(result.stderr.split("maxrss_kib")[1].split()[0]) * 1024 if "maxrss_kib" in result.stderr else 0
    return result.returncode == 0 and 0 < peak < 800 << 20, f"peak resident memory {peak / 2**20:.0f} MiB"


def run(rounds: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(0)
    records: list[dict[str, Any]] = []

    def count(name: str, outcomes: list[tuple[bool, str]]) -> None:
        held = sum(ok for ok, _ in outcomes)
        broken = [note for ok, note in outcomes if not ok]
        records.append(
            {
                "trial": name,
                "trials": len(outcomes),
                "held": held,
                "broken": len(outcomes) - held,
                "notes": (broken or [outcomes[0][1]])[:3],
            }
        )
        print(f"{name}: {held} of {len(outcomes)} held", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="aunet-trust-") as tmp:
        folder = Path(tmp)
        (folder / "spec.toml").write_text(SPEC)
        import lzma

        with lzma.open(ROOT / "corpora" / "en_web.txt.xz") as f:
            (folder / "c.txt").write_bytes(f.read(80_000))
        for parallel in ("none", "ddp", "fsdp"):
            count(
                f"save fails, {parallel if parallel != 'none' else '1 process'}",
                [save_fails(folder, parallel, t) for t in range(rounds)],
            )
        count("4 new runs on one --out at once", [concurrent_starts(folder, t) for t in range(rounds)])
        for processes in (1, 2):
            reference_dir = folder / f"reference-{processes}"
            parallel = ["--parallel", "ddp"] if processes > 1 else []
            done = _aunet(
                [
                    *_launcher(processes),
                    "train",
                    "--spec",
                    "spec.toml",
                    "--data",
                    "c.txt",
                    "--out",
                    str(reference_dir),
                    "--steps",
                    str(STEPS),
                    *parallel,
                ],
                folder,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            reference = _losses(reference_dir)
            for sent in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                name = (
                    f"{signal.Signals(sent).name} at a random step, {processes} process{'es' if processes > 1 else ''}"
                )
                count(name, [signalled(folder, sent, processes, t, reference, rng) for t in range(rounds)])
        for name, ratio in corpus_peak(folder):
            records.append(
                {
                    "trial": f"corpus in memory, {name}",
                    "trials": 1,
                    "held": int(ratio <= 3),
                    "broken": int(ratio > 3),
                    "notes": [f"peak {ratio:.2f} bytes per byte of text"],
                }
            )
        count("1 GiB single-document .txt streamed", [stream_1gib(folder)])
    import mutants

    for name, caught in mutants.catch_counts(max(rounds, 20), shrink=False).items():
        records.append(
            {
                "trial": f"kit mutant: {name}",
                "trials": max(rounds, 20),
                "held": caught,
                "broken": max(rounds, 20) - caught,
                "notes": [],
            }
        )
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = ["| trial | trials | held | broken | notes |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['trial']} | {r['trials']} | {r['held']} | {r['broken']} | {'; '.join(r['notes'])} |")
    return "\n".join(lines)
