"""The integrations' commands, added through ``aunet_add_commands`` exactly as a third party's:
``aunet export`` (Hugging Face, the ``hf`` extra) and ``aunet harness`` (lm-evaluation-harness, the
``eval`` extra). Each loads its integration only when it runs, so the command line starts, and
lists them, without either extra."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from aunet.cli.options import Commands, number, positive_int, runtime_options
from aunet.core.hookspecs import hookimpl
from aunet.core.validators import MAX_COUNT


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command("export", help="write a run's checkpoint as a Hugging Face model folder (extra aunet[hf])")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    p.add_argument("--out", required=True, metavar="OUT", help="the folder to write (new, or empty)")
    p.set_defaults(run=cmd_export)

    p = commands.add_command("harness", help="score a trained model on lm-evaluation-harness tasks (the 'eval' extra)")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    p.add_argument(
        "--tasks",
        required=True,
        type=task_list,
        metavar="T[,T...]",
        help="lm-eval tasks or YAML files, comma-separated (`lm-eval ls tasks` lists them)",
    )
    p.add_argument("--include-path", default=None, metavar="P", help="a folder (or YAML file) of local lm-eval tasks")
    p.add_argument(
        "--num-fewshot",
        type=number(int, 0, strict=False, maximum=MAX_COUNT),
        default=None,
        metavar="K",
        help="examples in each prompt (default: the task's, else 0)",
    )
    p.add_argument(
        "--limit",
        type=limit_arg,
        default=None,
        metavar="N",
        help="at most N examples per task (below 1: that share of them), for quick checks",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="B", help="rows per forward (default 8)")
    p.add_argument("--out", required=True, metavar="OUT", help="where lm-eval's results and samples go")
    runtime_options(p)
    p.set_defaults(run=cmd_harness)


def cmd_export(args: argparse.Namespace) -> int:
    """``aunet export``: a run as a Hugging Face model folder."""
    from aunet.integrations.hf import export  # an InputError naming the extra when transformers is missing

    out = export(args.ckpt, args.out)
    print(f"exported to {out}: AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)")
    return 0


def task_list(text: str) -> list[str]:
    """``--tasks``: comma-separated names, none empty."""
    tasks = [t.strip() for t in text.split(",")]
    if not all(tasks):
        raise argparse.ArgumentTypeError(f"expected comma-separated task names, got '{text}'")
    return tasks


def limit_arg(text: str) -> int | float:
    """``--limit``: a whole count, or a fraction in (0, 1) of each task's examples."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    if value >= 1:
        if value != int(value):
            raise argparse.ArgumentTypeError(f"a count must be a whole number, got {text}")
        return int(value)
    return value


def cmd_harness(args: Any) -> int:
    """``aunet harness``: run the tasks, print a table of their metrics and where lm-eval's files went."""
    # --threads itself is applied by the command line's main, as for every command; an explicit
    # count also holds for the decoding steps (auto: one thread for a few rows on a CPU).
    threads = "auto" if str(getattr(args, "threads", "auto")).strip().lower() == "auto" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            from aunet.integrations.lm_eval.adapter import evaluate_tasks, format_table

            done = evaluate_tasks(
                args.ckpt,
                args.tasks,
                out=Path(args.out),
                include_path=args.include_path,
                num_fewshot=args.num_fewshot,
                limit=args.limit,
                batch_size=args.batch_size,
                device=args.device,
                decode_threads=threads,
            )
        finally:
            _show(caught)
    print(format_table(done.results))
    print(f"results: {done.results_file}")
    for task, path in done.samples_files.items():
        print(f"samples of {task}: {path}")
    return 0


def _show(caught: list[warnings.WarningMessage]) -> None:
    """Our RuntimeWarnings (truncations) as the command line's notes; others as Python shows them."""
    for w in caught:
        if issubclass(w.category, RuntimeWarning):
            print(f"aunet: note: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
