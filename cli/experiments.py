"""``aunet compare`` and ``aunet plan``: specs compared at one budget, and the paper's laws for one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from aunet.cli.options import (
    Commands,
    checked,
    flops,
    positive_float,
    positive_int,
    print_json,
    runtime_options,
)
from aunet.core.hookspecs import hookimpl


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command("compare", help="train several specs for the same budget, in turns, and compare them")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or shipped names (each with its own name)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops", type=flops, metavar="F", help="training FLOPs each (the paper's accounting)")
    budget.add_argument("--minutes", type=positive_float, metavar="M", help="minutes of training time each")
    budget.add_argument("--steps", type=positive_int, metavar="N", help="steps each")
    _trained_in_turns(
        p,
        out="where the runs, compare.json, compare.md and the plots go",
        resume="continue the comparison in --out (after Ctrl-C, a crash or a late error)",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="[SPEC:]KEY=V,V,...",
        help="train every spec (or only SPEC) once per value (several --grid: their product); the best "
        "variant of each spec is written to OUT/tuned/<spec>.toml",
    )
    p.set_defaults(run=cmd_compare)

    p = commands.add_command(
        "sweep", help="iso-FLOP ladders: each spec at several sizes and budgets, power laws fitted, crossovers"
    )
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or shipped names (each with its own name)")
    p.add_argument(
        "--budgets",
        type=flops_list,
        required=True,
        metavar="F,F,...",
        help="training FLOPs per run, e.g. 1e13,3e13,1e14",
    )
    p.add_argument(
        "--sizes",
        type=sizes_list,
        default=(0.5, 1.0, 2.0),
        metavar="X,X,...",
        help="sizes as factors of each spec's non-embedding parameters (default 0.5,1,2)",
    )
    _trained_in_turns(
        p,
        out="where the ladders, sweep.json, sweep.md and the plot go",
        resume="continue the sweep in --out where it stopped",
    )
    p.set_defaults(run=cmd_sweep)

    p = commands.add_command("plan", help="the paper's scaling laws for a compute budget: batch, learning rate, steps")
    p.add_argument("--flops", type=flops, required=True, metavar="C", help="total training FLOPs, e.g. 1.1e19")
    p.add_argument("--arch", choices=("aunet", "bpe"), default="aunet", help="which fitted laws (default aunet)")
    p.add_argument(
        "--spec",
        default=None,
        metavar="FILE",
        help="the spec to plan for (default: specs/paper/aunet2-1b for aunet, specs/paper/bpe-1b for bpe)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_plan)


def _trained_in_turns(p: argparse.ArgumentParser, *, out: str, resume: str) -> None:
    """The options of a command that trains several specs in turns (compare, sweep)."""
    p.add_argument(
        "--data", default=None, metavar="PATH", help="the corpus, a path or embedded:NAME (default: the embedded one)"
    )
    p.add_argument(
        "--split",
        choices=("final", "tuning"),
        default="final",
        help="the validation split: final (what reported numbers use, the default) or tuning (for choosing knobs)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help=out)
    p.add_argument("--turn-steps", type=positive_int, default=100, metavar="K", help="steps per turn (default 100)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a field of every spec, e.g. --set train.lr=1e-3",
    )
    p.add_argument("--resume", action="store_true", help=resume)
    runtime_options(p)


def _in_turns(command: str, work: Callable[[], Any]) -> tuple[int | None, Any]:
    """Run ``work``: (None, what it returned), or (the exit status, None) where a signal or Ctrl-C
    stopped it between two turns (every run then at its last turn's checkpoint)."""
    from aunet.jobs.experiments.turns import TurnsStopped

    try:
        return None, work()
    except TurnsStopped as stopped:
        print(f"aunet {command}: {stopped}; continue with the same command and --resume", file=sys.stderr)
        return 128 + stopped.signum, None
    except KeyboardInterrupt:
        print(f"aunet {command}: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130, None


def flops_list(text: str) -> list[float]:
    """``--budgets``: comma-separated FLOPs, each positive."""
    return [flops(part) for part in text.split(",")]


def sizes_list(text: str) -> list[float]:
    """``--sizes``: comma-separated positive factors."""
    return [positive_float(part) for part in text.split(",")]


def cmd_sweep(args: argparse.Namespace) -> int:
    from aunet.jobs.config import load_spec_with_overrides
    from aunet.jobs.data.corpus import Split
    from aunet.jobs.experiments.sweep import sweep

    specs = [checked(load_spec_with_overrides(name, args.overrides), name, args.overrides) for name in args.specs]
    out = Path(args.out)
    stopped, _ = _in_turns(
        "sweep",
        lambda: sweep(
            specs,
            budgets=args.budgets,
            sizes=args.sizes,
            data=args.data,
            out=out,
            device=args.device,
            slice_steps=args.turn_steps,
            resume=args.resume,
            which=Split(args.split),
        ),
    )
    if stopped is not None:
        return stopped
    print((out / "sweep.md").read_text(encoding="utf-8"), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from aunet.jobs.config import load_spec_with_overrides
    from aunet.jobs.data.corpus import Split
    from aunet.jobs.experiments import grid
    from aunet.jobs.experiments.compare import Budget, compare, markdown

    specs = [checked(load_spec_with_overrides(name, args.overrides), name, args.overrides) for name in args.specs]
    variants = None
    if args.grid:
        axes = [grid.Axis.parse(text) for text in args.grid]
        sources = dict(zip((s.name for s in specs), args.specs))
        variants = grid.variants([s.name for s in specs], axes)
        specs = [
            attrs.evolve(
                checked(load_spec_with_overrides(sources[v.base], [*args.overrides, *v.overrides]), v.base),
                name=v.name,
            )
            for v in variants
        ]
    out = Path(args.out)
    budget = Budget(flops=args.flops, minutes=args.minutes, steps=args.steps)
    stopped, report = _in_turns(
        "compare",
        lambda: compare(
            specs,
            budget=budget,
            data=args.data,
            out=out,
            device=args.device,
            slice_steps=args.turn_steps,
            resume=args.resume,
            which=Split(args.split),
        ),
    )
    if stopped is not None:
        return stopped
    print(markdown(report, budget), end="")
    if variants is not None:
        choices = grid.best(report["rows"], variants)
        written = grid.write_tuned(out, sources, choices, args.overrides)
        print(grid.markdown(choices), end="")
        print("tuned specs: " + ", ".join(str(p) for p in written))
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}" + "".join(f", {out / p}" for p in report["plots"]))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from aunet.jobs.config import load_spec
    from aunet.jobs.experiments.plan import format_plan, make_plan

    name = args.spec or ("paper/bpe-1b" if args.arch == "bpe" else "paper/aunet2-1b")
    spec = checked(load_spec(name), name)
    plan = make_plan(args.flops, arch=args.arch, spec=spec)
    if args.json:
        print_json(plan.to_json())
    else:
        print(format_plan(plan))
    return 0
