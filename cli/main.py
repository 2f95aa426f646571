"""The ``aunet`` command line.

User errors (a missing file, a bad spec, an unknown kind) print one line each, ``aunet: error:
...``, on stderr and exit with status 2, never a traceback. Anything else that escapes is a bug.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from aunet.core.errors import AunetError, InputError, SpecError, did_you_mean, known_list
from aunet.core.registry import Family, Registry, default_registry
from aunet.core.spec import Streaming
from aunet.core.validators import MAX_COUNT, MAX_SEED
from aunet.jobs.runtime.files import input_file

EXIT_USAGE = 2
#: The spec ``aunet train`` trains when given none (shipped, so it loads from any directory).
DEFAULT_SPEC = "aunet2-tiny"


class _Parser(argparse.ArgumentParser):
    """argparse, with errors in the same one-line shape as every other user error, and without
    prefix matching (``--step 5`` must not mean ``--steps 5``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"aunet: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def unrecognized(self, extras: list[str]) -> None:
        """Refuse arguments this command does not take, suggesting the nearest flag."""
        flags = [o for o in self._option_string_actions if o.startswith("--")]
        hints = []
        for extra in extras:
            if extra.startswith("-"):
                hint = did_you_mean(extra.split("=", 1)[0], flags)
                if hint:
                    hints.append(f"{extra.split('=', 1)[0]}: {hint.removeprefix('; ')}")
        self.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))


def _tag_subparsers(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command records its own parser, so errors can name its flags."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(parser=sub)
                _tag_subparsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    # Before torch loads: idle OpenMP threads sleep instead of spinning (on a machine whose cores
    # are shared, spinning threads made each parallel op cost up to 8 ms).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:  # torchrun's options, then an aunet command: not parsed here
        try:
            from aunet.cli.launch import launch

            return launch(argv[1:], commands=[c for c in _commands(parser) if c != "launch"])
        except AunetError as exc:
            for line in exc.lines():
                print(f"aunet: error: {line}", file=sys.stderr)
            return EXIT_USAGE
    args, extras = parser.parse_known_args(argv)
    if extras:
        getattr(args, "parser", parser).unrecognized(extras)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if hasattr(args, "threads"):
            from aunet.jobs.runtime.devices import parse_threads, set_process_threads

            set_process_threads(parse_threads(args.threads))
        return args.run(args)
    except AunetError as exc:
        # Under torchrun every process meets the same errors: the first prints them, and a
        # process prints its own only (with its rank).
        rank, size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if (rank == 0 and not exc.quiet) or exc.rank_local:
            where = f"[rank {rank} of {size}] " if size > 1 else ""
            for line in exc.lines():
                print(f"aunet: error: {where}{line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aunet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `aunet split ... | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    return [
        name for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name in action.choices
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aunet", description="Autoregressive U-Nets: tokenizer-free language models.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("plugins", help="list the registered kinds of every family and where they come from")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_plugins)

    spec = sub.add_parser("spec", help="check or show a spec file")
    spec_sub = spec.add_subparsers(title="spec commands", metavar="COMMAND", parser_class=_Parser)
    p = spec_sub.add_parser("check", help="validate spec files; every problem is listed with its path")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(run=cmd_spec_check)
    p = spec_sub.add_parser("list", help="the shipped specs, loadable by name from any directory")
    p.set_defaults(run=cmd_spec_list)
    p = spec_sub.add_parser("show", help="print the resolved spec, defaults filled in")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_spec_show)

    p = sub.add_parser("compare", help="train several specs for the same budget, in turns, and compare them")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or shipped names (each with its own name)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops", type=_flops, metavar="F", help="training FLOPs each (the paper's accounting)")
    budget.add_argument("--minutes", type=_positive_float, metavar="M", help="minutes of training time each")
    budget.add_argument("--steps", type=_positive_int, metavar="N", help="steps each")
    p.add_argument("--data", default=None, metavar="PATH", help="the corpus (default: the embedded one)")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="where the runs, compare.json, compare.md and the plots go"
    )
    p.add_argument("--turn-steps", type=_positive_int, default=100, metavar="K", help="steps per turn (default 100)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a field of every spec, e.g. --set train.lr=1e-3",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the comparison in --out (after Ctrl-C, a crash or a late error)"
    )
    _runtime_options(p)
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("plan", help="the paper's scaling laws for a compute budget: batch, learning rate, steps")
    p.add_argument("--flops", type=_flops, required=True, metavar="C", help="total training FLOPs, e.g. 1.1e19")
    p.add_argument("--arch", choices=("aunet", "bpe"), default="aunet", help="which fitted laws (default aunet)")
    p.add_argument(
        "--spec",
        default=None,
        metavar="FILE",
        help="the spec to plan for (default: specs/paper/aunet2-1b for aunet, specs/paper/bpe-1b for bpe)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_plan)

    p = sub.add_parser("split", help="show where a stack of splitters puts boundaries")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", metavar="FILE", help="use the splitters of this spec")
    src.add_argument("--splitters", metavar="KINDS", help="comma-separated splitter kinds, bottom level first")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="STR", help="the text to split")
    text.add_argument("--file", metavar="PATH", help="a file to split (any bytes)")
    text.add_argument(
        "--suite",
        metavar="NAME",
        choices=["udhr"],
        help="report on every text of a suite instead (udhr: 525 languages)",
    )
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="with --suite: only these texts (file stems or BCP 47 tags, comma-separated, e.g. eng,cmn_hans,tha)",
    )
    p.add_argument("--json", action="store_true", help="per-byte levels and statistics as JSON")
    p.add_argument(
        "--show",
        type=_number(int, 0, strict=False, maximum=MAX_COUNT),
        default=2000,
        metavar="N",
        help="bytes of the text to draw in the human view (default 2000)",
    )
    p.set_defaults(run=cmd_split)

    p = sub.add_parser(
        "train", help="train a model (default: aunet2-tiny on the embedded corpus: 3,000 steps, 24 minutes on 2 vCPUs)"
    )
    p.add_argument(
        "--spec",
        metavar="FILE",
        help="a spec file, or a shipped spec by name (default: aunet2-tiny; see `aunet spec list`)",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="a text file, a folder of .txt files or a .jsonl file with a "
        '"text" field (default: the embedded World English Bible)',
    )
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/NAME-DATE-TIME)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, metavar="N", help="train for N optimizer steps")
    budget.add_argument("--minutes", type=_positive_float, metavar="M", help="train for M minutes")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a spec field, e.g. --set train.lr=1e-3 --set levels[1].stage.layers=6",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument(
        "--stop-at",
        type=_positive_int,
        metavar="STEP",
        help="stop after this step with a checkpoint, as if interrupted (resume later with --resume)",
    )
    p.add_argument(
        "--profile-steps",
        metavar="A:B",
        type=_step_range,
        help="profile steps A to B into DIR/profile (train.profile.start/stop)",
    )
    p.add_argument(
        "--parallel",
        choices=["none", "ddp", "fsdp"],
        default=None,
        help="under torchrun: DDP or FSDP2 over its processes (train.parallel; default none)",
    )
    _runtime_options(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser(
        "profile", help="profile training steps per attention backend (traces for TensorBoard, Perfetto)"
    )
    p.add_argument(
        "--spec", metavar="FILE", default=DEFAULT_SPEC, help="a spec file or shipped spec (default aunet2-tiny)"
    )
    p.add_argument(
        "--attention",
        nargs="+",
        metavar="KIND",
        help="attention kinds to profile, each on every stage (default: the spec's own)",
    )
    p.add_argument("--context", type=_positive_int, metavar="T", help="bytes per row (default: the spec's)")
    p.add_argument("--batch", type=_positive_int, metavar="B", help="rows per step (default: the spec's)")
    p.add_argument("--steps", type=_positive_int, default=3, metavar="N", help="profiled steps (default 3)")
    p.add_argument(
        "--warmup",
        type=_number(int, 0, strict=False, maximum=1000),
        default=1,
        metavar="N",
        help="steps run under the profiler before the profiled ones (default 1)",
    )
    p.add_argument("--data", metavar="PATH", help="training text (default: the embedded corpus)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help="override a spec field"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="where the traces go: DIR/<kind>/*.pt.trace.json")
    p.add_argument("--json", action="store_true", help="the summaries as JSON")
    _runtime_options(p)
    p.set_defaults(run=cmd_profile)

    p = sub.add_parser("eval", help="validation bits per byte of a checkpoint, beside xz -9e")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--data", metavar="PATH", help="a corpus to evaluate, whole (default: the run's own data, its validation split)"
    )
    data.add_argument("--suite", metavar="NAME", choices=["udhr"], help="bits per byte on every text of a suite")
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="with --suite: only these texts (file stems or BCP 47 tags, comma-separated, e.g. eng,cmn_hans,tha)",
    )
    p.add_argument(
        "--split",
        choices=["all", "validation", "train"],
        default=None,
        help="which documents: all (the default with --data), validation (the default for the run's own data) or train",
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="N", help="rows per forward (default 8)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _runtime_options(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("generate", help="continue a prompt with a trained model, streaming the text")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="a text to continue (default: empty, start from BOS); repeat it for several prompts, decoded as one batch",
    )
    prompts.add_argument(
        "--prompts",
        metavar="FILE",
        help="prompts from a file, decoded as one batch: one per line, "
        'or a .jsonl file of strings or of objects with a "prompt" (or "text") field',
    )
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="STR",
        help="end a row once it produces STR (kept in the output); repeatable. Write a newline as $'\\n' in bash",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per prompt: prompt, text (the new bytes "
        "as UTF-8, invalid bytes replaced), and why the row ended",
    )
    p.add_argument("--max-bytes", type=_positive_int, default=200, metavar="N", help="new bytes at most (default 200)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        metavar="N",
        help="rows decoded together when there are several prompts (default 64)",
    )
    p.add_argument(
        "--temperature", type=_non_negative_float, default=0.7, metavar="T", help="0 is greedy (default 0.7)"
    )
    p.add_argument("--top-k", type=_positive_int, default=None, metavar="K", help="sample among the K likeliest")
    p.add_argument("--top-p", type=_positive_float, default=None, metavar="P", help="nucleus sampling")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="sampling seed, 0 to 2^63 - 1 (default 0)")
    p.add_argument(
        "--levels",
        choices=("splitter", "predicted"),
        default="splitter",
        help="where new bytes' levels come from: the spec's splitters (default) or the model's "
        "level head (a model trained with model.level_loss > 0)",
    )
    _runtime_options(p)
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser(
        "launch",
        help="torchrun for aunet: `aunet launch --nproc-per-node N train ... --parallel ddp`; "
        "errors stay one line, the exit status is the workers'",
        add_help=False,
    )
    p.add_argument(
        "torchrun", nargs=argparse.REMAINDER, help="torchrun's options, then an aunet command and its options"
    )

    p = sub.add_parser("export", help="write a run's checkpoint as a Hugging Face model folder (extra aunet[hf])")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    p.add_argument("--out", required=True, metavar="OUT", help="the folder to write (new, or empty)")
    p.set_defaults(run=cmd_export)

    from aunet.integrations.lm_eval import (
        adapter as harness,  # lm-evaluation-harness itself loads only when the command runs
    )

    p = sub.add_parser("harness", help="score a trained model on lm-evaluation-harness tasks (the 'eval' extra)")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    p.add_argument(
        "--tasks",
        required=True,
        type=harness.task_list,
        metavar="T[,T...]",
        help="lm-eval tasks or YAML files, comma-separated (`lm-eval ls tasks` lists them)",
    )
    p.add_argument("--include-path", default=None, metavar="P", help="a folder (or YAML file) of local lm-eval tasks")
    p.add_argument(
        "--num-fewshot",
        type=_number(int, 0, strict=False, maximum=MAX_COUNT),
        default=None,
        metavar="K",
        help="examples in each prompt (default: the task's, else 0)",
    )
    p.add_argument(
        "--limit",
        type=harness.limit_arg,
        default=None,
        metavar="N",
        help="at most N examples per task (below 1: that share of them), for quick checks",
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="B", help="rows per forward (default 8)")
    p.add_argument("--out", required=True, metavar="OUT", help="where lm-eval's results and samples go")
    _runtime_options(p)
    p.set_defaults(run=harness.cmd_harness)
    _tag_subparsers(parser)
    return parser


def _runtime_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``, on every command that runs a model."""
    p.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="auto (CUDA when present, then MPS, else CPU), cpu, cuda, cuda:N or mps (default auto)",
    )
    p.add_argument(
        "--threads",
        default="auto",
        metavar="N",
        help="CPU threads for torch (default auto: one per physical core; decoding a few rows uses one)",
    )


def _number(
    convert: Callable[[str], Any], minimum: float, strict: bool, maximum: float | None = None
) -> Callable[[str], Any]:
    """An argparse type: a finite ``convert(text)`` at least ``minimum`` (above it when ``strict``),
    at most ``maximum``."""
    noun = "a whole number" if convert is int else "a number"
    rule = f"> {minimum}" if strict else f"at least {minimum}"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {value}")
        if not (value > minimum if strict else value >= minimum):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
        return value

    return parse


_positive_int = _number(int, 1, strict=False, maximum=MAX_COUNT)
_positive_float = _number(float, 0, strict=True, maximum=1e12)
_non_negative_float = _number(float, 0, strict=False, maximum=1e12)
_seed = _number(int, 0, strict=False, maximum=MAX_SEED)
_flops = _number(float, 0, strict=True, maximum=1e30)


def _step_range(text: str) -> tuple[int, int]:
    """``A:B`` (or ``A``): steps A to B, 1-based, A <= B."""
    first, sep, last = text.partition(":")
    try:
        start, stop = int(first), int(last if sep else first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (steps, e.g. 10:12), got '{text}'") from None
    if not 1 <= start <= stop:
        raise argparse.ArgumentTypeError(f"expected 1 <= A <= B, got {start}:{stop}")
    return start, stop


# -- plugins -------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = default_registry()
    listing = registry.listing()
    if args.json:
        plugins = [
            {"name": name, "distribution": o.distribution, "version": o.version, "builtin": o.builtin}
            for name, o in sorted(registry.plugins.items())
        ]
        _print_json({"families": listing, "plugins": plugins})
        return 0
    for family, entries in listing.items():
        print(f"{family}:")
        if not entries:
            print("  (none registered)")
        width = max((len(e["kind"]) for e in entries), default=0)
        for e in entries:
            origin = f"{e['distribution']} {e['version']}" if e["distribution"] else "registered in code"
            print(f"  {e['kind']:<{width}}  {origin} [{e['plugin']}]  {e['summary']}")
    return 0


# -- spec ----------------------------------------------------------------------------------------


def _checked(spec, source: str, overrides: Sequence[str] = ()):
    """The resolved spec, or SpecError with every problem, each at its source (the file, or the
    ``--set`` behind it). A spec without any stage is a splitting-only spec (``aunet split
    --spec``) and is checked as such."""
    from aunet.core.spec import attribute, override_sources, resolve_spec

    if all(level.stage is None for level in spec.levels):
        problems = spec.check_splitting()
    else:
        spec = resolve_spec(spec)
        problems = spec.check_model()
    if problems:
        raise SpecError(attribute(problems, override_sources(overrides)), source=source)
    return spec


def _is_model_spec(spec) -> bool:
    return any(level.stage is not None for level in spec.levels)


def cmd_spec_check(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec

    issues: list[str] = []
    for file in args.files:
        try:
            spec = _checked(load_spec(file), file)
        except AunetError as exc:
            issues.extend(exc.lines())
            continue
        kinds = ", ".join(level.splitter.kind for level in spec.levels[1:] if level.splitter) or "no pooling"
        what = "" if _is_model_spec(spec) else ", splitting only: no stages"
        count = f"{len(spec.levels)} level{'s' if len(spec.levels) != 1 else ''}"
        print(f"{file}: ok ({count}: {kinds}{what})")
    if issues:
        raise AunetError("\n".join(issues))
    return 0


def cmd_spec_list(args: argparse.Namespace) -> int:
    from aunet.core.resources import shipped_spec_names, spec_path
    from aunet.core.spec import load_spec

    for name in shipped_spec_names():
        spec = load_spec(spec_path(name))
        kinds = ", ".join(level.splitter.kind for level in spec.levels[1:] if level.splitter) or "flat, no pooling"
        print(f"{name:<18} {len(spec.levels)} level{'s' if len(spec.levels) != 1 else ''} ({kinds})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec_with_overrides
    from aunet.jobs.experiments.compare import Budget, compare, markdown
    from aunet.jobs.experiments.turns import TurnsStopped

    specs = [_checked(load_spec_with_overrides(name, args.overrides), name, args.overrides) for name in args.specs]
    out = Path(args.out)
    budget = Budget(flops=args.flops, minutes=args.minutes, steps=args.steps)
    try:
        report = compare(
            specs,
            budget=budget,
            data=args.data,
            out=out,
            device=args.device,
            slice_steps=args.turn_steps,
            resume=args.resume,
        )
    except TurnsStopped as stopped:
        print(f"aunet compare: {stopped}; continue with the same command and --resume", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:  # between two turns: every run is at its last turn's checkpoint
        print("aunet compare: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
    print(markdown(report, budget), end="")
    print(f"wrote {out / 'compare.json'}, {out / 'compare.md'}" + "".join(f", {out / p}" for p in report["plots"]))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec
    from aunet.jobs.experiments.plan import format_plan, make_plan

    name = args.spec or ("paper/bpe-1b" if args.arch == "bpe" else "paper/aunet2-1b")
    spec = _checked(load_spec(name), name)
    plan = make_plan(args.flops, arch=args.arch, spec=spec)
    if args.json:
        _print_json(plan.to_json())
    else:
        print(format_plan(plan))
    return 0


def cmd_spec_show(args: argparse.Namespace) -> int:
    from aunet.core.spec import dump_spec, load_spec, spec_to_dict

    given = load_spec(args.file)
    spec = _checked(given, args.file)  # resolved: contractions the spec leaves out are measured now
    sizes = None
    if _is_model_spec(spec):
        from aunet.core.accounting import account

        measured = any(level.contraction is None for level in given.levels[1:])
        if spec.model.bpe and spec.model.tokenizer.bytes_per_token is None:
            from aunet.jobs.data.bpe import embedded_bytes_per_token, with_bytes_per_token

            spec = with_bytes_per_token(spec, embedded_bytes_per_token(spec.model.tokenizer.vocab_size))
            measured = True  # bytes per token, measured here
        sizes = attrs.evolve(account(spec), contraction_measured=measured)
    if args.json:
        _print_json({"name": spec.name, "spec": spec_to_dict(spec), **(sizes.to_json() if sizes else {})})
        return 0
    print(dump_spec(spec), end="")
    if sizes is not None:
        print(format_sizes(sizes))
    return 0


def format_sizes(sizes) -> str:
    """The accounting as TOML comments, so that ``spec show`` output is still a valid spec."""
    width = max(len(name) for name in sizes.parameters_by_component)
    lines = [
        "",
        "# --- sizes (`aunet spec show --json` for machine-readable figures) ---",
        f"# parameters: {sizes.parameters:,}",
    ]
    lines += [f"#   {name:<{width}}  {count:>15,}" for name, count in sizes.parameters_by_component.items()]
    source = (
        "measured on the embedded corpus where the spec gives none" if sizes.contraction_measured else "from the spec"
    )
    lines += [
        f"# FLOPs per byte: {sizes.flops_per_byte:.3e} (the paper's accounting: the stacks only)",
        f"#   with poolers, upsamplers and output head: {sizes.flops_per_byte_all:.3e}",
        f"# bytes per position at levels 0..{len(sizes.contraction) - 1}: "
        + ", ".join(f"{k:.2f}" for k in sizes.contraction)
        + f" ({source})",
        f"# context: {sizes.context} {'tokens' if sizes.tokens else 'bytes'} per row",
    ]
    if sizes.reference_flops_per_byte is not None:
        lines.append(
            f"# FLOPs per byte, the reference's estimator: {sizes.reference_flops_per_byte:.3e} "
            "(Lingua's attention term 3.5 x 4 x layers x S x dim / 2; every stack and component)"
        )
    if sizes.memory:
        gibs = list(sizes.memory[0].largest_batch)
        lines.append(
            "# training memory, one process: largest batch (rows of the context) that fits in "
            + ", ".join(f"{g} GiB" for g in gibs)
        )
        lines.append(
            "#   (16 B per parameter, 18 with bfloat16 autocast, + activations at the static capacities;"
            " `--json`: formulas)"
        )
        for m in sizes.memory:
            fits = " ".join(f"{n:>7,}" for n in m.largest_batch.values())
            lines.append(
                f"#   {m.precision:<8} checkpointing {m.checkpointing:<9} {m.activation_bytes_per_row / 2**20:>9,.1f} MiB "
                f"per row, state {m.state_bytes / 2**30:,.2f} GiB: {fits}"
            )
        if sizes.memory_unknown:
            lines.append(f"#   not counted (no activation formula): {', '.join(sizes.memory_unknown)}")
    return "\n".join(lines)


# -- split ---------------------------------------------------------------------------------------


def _stack_from_kinds(text: str, registry: Registry) -> Any:
    from aunet.core.levels import SplitterStack

    kinds = [k.strip() for k in text.split(",")]
    if not all(kinds):
        raise InputError(f"--splitters: empty kind in '{text}'; give comma-separated kinds, e.g. whitespace,word-pair")
    known = registry.kinds(Family.SPLITTER)
    splitters = []
    for kind in kinds:
        if kind not in known:
            raise InputError(
                f"--splitters: unknown splitter '{kind}'; known: {known_list(known)}{did_you_mean(kind, known)}"
            )
        try:
            splitters.append(known[kind].cls())
        except TypeError:
            raise InputError(
                f"--splitters: splitter '{kind}' needs options; give it in a spec file with --spec"
            ) from None
    stack = SplitterStack(tuple(splitters))
    problems = stack.check(path="--splitters")
    if problems:
        raise SpecError(problems)
    return stack


#: ``aunet split --file`` splits files up to this size in one batch (fast; about 11 to 54 bytes of
#: memory per byte) and streams larger ones through the splitters' state machine in chunks, so
#: memory stays bounded whatever the size.
BATCH_SPLIT_BYTES = 8 << 20
SPLIT_CHUNK = 1 << 20


class _SplitCounts:
    """Segment counts of a stream of levels, chunk by chunk (``aunet.core.levels.segment_stats``)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.at_least = np.zeros(depth + 1, dtype=np.int64)
        self.n_bytes = 0
        self.last = -1

    def add(self, levels: np.ndarray) -> None:
        counts = np.bincount(levels, minlength=self.depth + 1)[: self.depth + 1]
        self.at_least += np.cumsum(counts[::-1])[::-1]
        self.n_bytes += len(levels)
        if len(levels):
            self.last = int(levels[-1])

    def stats(self) -> Any:
        from aunet.core.levels import SegmentStats

        segments = tuple(
            int(self.at_least[i]) + int(self.n_bytes > 0 and self.last < i) for i in range(1, self.depth + 1)
        )
        return SegmentStats(self.n_bytes, segments)


def _file_levels(stack: Any, path: Path, size: int, sink: Any) -> None:
    """Feed ``sink(data, levels)`` every chunk of the file's levels (one chunk when small)."""
    with open(path, "rb") as f:
        if size <= BATCH_SPLIT_BYTES:
            data = f.read()
            sink(data, stack.levels(data))
            return
        stream = stack.stream()
        while chunk := f.read(SPLIT_CHUNK):
            sink(chunk, stream.feed(chunk))


def cmd_split(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec

    registry = default_registry()
    if args.spec:
        spec = load_spec(args.spec, registry=registry)
        problems = spec.check_splitting()
        if problems:
            raise SpecError(problems, source=args.spec)
        stack = spec.splitter_stack()
    else:
        stack = _stack_from_kinds(args.splitters, registry)
    if args.suite:
        return _split_suite(stack, args)
    if args.only:
        raise InputError("--only applies with --suite")
    kinds = [s.kind for s in stack.splitters]
    counts = _SplitCounts(stack.depth)
    show = max(args.show, 0)
    shown: list[tuple[bytes, np.ndarray]] = []
    shown_bytes = 0

    def keep_for_display(data: bytes, levels: np.ndarray) -> None:
        nonlocal shown_bytes
        counts.add(levels)
        if shown_bytes < show:
            take = show - shown_bytes
            shown.append((data[:take], levels[:take]))
            shown_bytes += min(take, len(data))

    if args.text is not None:
        data = args.text.encode("utf-8", "surrogateescape")
        path, size = None, len(data)
    else:
        path, size = input_file(args.file)
    if args.json:
        # Written as it is computed: a 100 MB file gives 100 million levels, never held at once.
        out = sys.stdout
        out.write(f'{{"n_bytes": {size}, "splitters": {json.dumps(kinds)}, "levels": [')
        first = True

        def emit(data: bytes, levels: np.ndarray) -> None:
            nonlocal first
            counts.add(levels)
            if len(levels):
                out.write(("" if first else ", ") + ", ".join(map(str, levels.tolist())))
                first = False

        if path is None:
            emit(data, stack.levels(data))
        else:
            _file_levels(stack, path, size, emit)
        stats = counts.stats()
        out.write(
            f'], "segments": {json.dumps(list(stats.segments))}, '
            f'"bytes_per_segment": {json.dumps([round(x, 4) for x in stats.bytes_per_segment])}}}\n'
        )
        return 0
    if path is None:
        keep_for_display(data, stack.levels(data))
    else:
        _file_levels(stack, path, size, keep_for_display)
    stats = counts.stats()
    print(f"{stats.n_bytes:,} bytes")
    for i, kind in enumerate(kinds, start=1):
        print(
            f"level {i} ({kind}): {stats.segments[i - 1]:,} segments, {stats.bytes_per_segment[i - 1]:.2f} bytes per segment"
        )
    head = b"".join(d for d, _ in shown)
    head_levels = np.concatenate([lv for _, lv in shown]) if shown else np.zeros(0, np.uint8)
    if len(head) < stats.n_bytes:
        print(
            f"(drawing the first {len(head):,} of {stats.n_bytes:,} bytes; --show N draws more, --json gives every level)"
        )
    for i in range(1, stack.depth + 1):
        print(f"\nlevel {i} ({kinds[i - 1]}), '|' after each boundary:")
        print(render_segments(head, head_levels, i))
    return 0


# -- train and eval -------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec_with_overrides
    from aunet.jobs.runs.directory import default_out
    from aunet.jobs.train.loop import train

    if args.resume and not args.out:
        raise InputError("--resume needs --out DIR, the run directory to continue")
    spec = None
    overrides = list(args.overrides)
    if args.profile_steps:
        overrides += [f"train.profile.start={args.profile_steps[0]}", f"train.profile.stop={args.profile_steps[1]}"]
    if args.parallel:
        overrides.append(f"train.parallel={args.parallel}")
    if not args.resume or args.spec:
        source = args.spec or DEFAULT_SPEC
        spec = load_spec_with_overrides(source, overrides)
        _checked(spec, source, overrides)  # the trainer resolves it, with the data's contraction
        overrides = []
    out = Path(args.out) if args.out else default_out(spec)
    summary = train(
        spec,
        data=args.data,
        out=out,
        steps=args.steps,
        minutes=args.minutes,
        resume=args.resume,
        overrides=overrides,
        stop_at=args.stop_at,
        device=args.device,
    )
    code = _stop_code(summary, args.stop_at)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the first process reports
        return code
    if summary.interrupted:
        where = f"; checkpoint {summary.checkpoint}" if summary.checkpoint else ""
        why = f" ({signal.Signals(summary.signal).name})" if summary.signal else ""
        print(
            f"stopped at step {summary.step}{why}{where}; continue with: aunet train --out {out} --resume",
            file=sys.stderr,
        )
        if summary.throughput is not None:
            print(training_line(summary), file=sys.stderr)
        return code
    split = "the whole validation split" if summary.val_whole else "its first bytes, train.eval.final_bytes"
    print(f"validation: {summary.val_bpb:.4f} bits per byte on {summary.val_bytes:,} bytes ({split})")
    print(f"xz -9e:     {summary.xz_bpb:.4f} bits per byte on the same bytes")
    if summary.throughput is not None:
        print(training_line(summary))
    if summary.sample is not None:
        print(f"sample (the prompt {_visible_text(summary.prompt)!r}, then {len(summary.sample):,} generated bytes):")
        print(_visible_text(summary.prompt + summary.sample))
    print(f"run directory: {out} (checkpoint {summary.checkpoint.name if summary.checkpoint else 'none'})")
    return 0


def _stop_code(summary: Any, stop_at: int | None) -> int:
    """0 for a finished run (or one stopped at --stop-at), 128 + the signal for a stopped one."""
    if not summary.interrupted or (stop_at is not None and summary.step >= stop_at and not summary.signal):
        return 0
    return 128 + (summary.signal or signal.SIGINT)


def training_line(summary: Any) -> str:
    """The closing figures of the training steps: last loss, speed, model FLOPs utilisation, memory."""
    from aunet.jobs.train.loop import duration, memory_text

    t = summary.throughput
    loss = f"last step's loss {summary.train_bpb:.4f} bits per byte; " if summary.train_bpb is not None else ""
    device = f", device peak {memory_text(t.peak_device_memory)}" if t.peak_device_memory is not None else ""
    return (
        f"training:   {loss}{t.steps:,} steps in {duration(t.seconds)}, {t.bytes_per_s / 1000:,.1f} kB/s, "
        f"{t.flops_per_s:.3g} model FLOP/s = {100 * t.mfu:.1f}% of this device's measured matmul peak "
        f"({t.peak_flops:.3g} FLOP/s); peak resident memory {memory_text(t.peak_host_memory)}{device}"
    )


def cmd_profile(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec_with_overrides
    from aunet.jobs.runtime.devices import resolve_device
    from aunet.jobs.train.profiling import format_summary, profile_backends

    spec = load_spec_with_overrides(args.spec, args.overrides)
    _checked(spec, args.spec, args.overrides)
    kinds = args.attention or sorted(
        {level.stage.attention.kind for level in spec.levels if hasattr(level.stage, "attention")}
    )
    known = default_registry().kinds(Family.ATTENTION)
    for kind in kinds:
        if kind not in known:
            raise InputError(
                f"--attention: unknown attention kind '{kind}'; known: {known_list(known)}{did_you_mean(kind, known)}"
            )
    summaries = profile_backends(
        spec,
        kinds=kinds,
        device=resolve_device(args.device),
        context=args.context,
        batch=args.batch,
        steps=args.steps,
        warmup=args.warmup,
        out=Path(args.out),
        data=args.data,
    )
    if args.json:
        _print_json({"spec": spec.name, "profiles": [s.to_json() for s in summaries]})
        return 0
    for summary in summaries:
        print(format_summary(summary))
    print(
        f"traces: tensorboard --logdir {args.out}  (PyTorch Profiler tab), or open a *.pt.trace.json in ui.perfetto.dev"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from aunet.jobs.data.corpus import (
        encode_documents,
        fingerprint_changes,
        load_corpus,
        model_encoding,
        xz_bits_per_byte,
    )
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runs.directory import load_run
    from aunet.jobs.runtime.devices import model_autocast
    from aunet.jobs.train.metrics import Progress

    run = load_run(args.ckpt, device=args.device)
    spec, model, ckpt = run.spec, run.model, run.checkpoint
    if args.suite:
        return _eval_suite(spec, model, ckpt, args)
    if args.only:
        raise InputError("--only applies with --suite")
    if args.data is None and (run.data.get("fingerprint") or {}).get("streamed"):
        return _eval_streamed(run, args)
    if args.data is not None:
        corpus = load_corpus(args.data)
        split = args.split or "all"
    else:  # the run's own data, its validation split
        corpus = load_corpus(_run_data(run))
        split = args.split or "validation"
        changes = fingerprint_changes(run.data.get("fingerprint") or {}, corpus.fingerprint) if run.data else []
        if changes and run.data.get("fingerprint"):
            print(
                f"aunet: note: the run's data changed since training ({'; '.join(changes[:3])}); "
                "evaluating on it as it is now",
                file=sys.stderr,
            )
    for notice in corpus.notices:
        print(f"aunet: note: {notice}", file=sys.stderr)
    chosen = {"all": corpus.documents, "validation": corpus.validation, "train": corpus.train}[split]
    docs = encode_documents(chosen, model_encoding(run.model))
    if not docs:
        raise InputError(f"the {split} split of {corpus.source} is empty")
    progress = Progress(sys.stderr)
    result = evaluate(
        model,
        docs,
        context=spec.model.context,
        batch_size=args.batch_size,
        progress=progress,
        autocast=model_autocast(model),
    )
    data = b"".join(d.data for d in chosen)
    xz = xz_bits_per_byte(data)
    xz_note = _xz_note(len(data))
    if args.json:
        _print_json(
            {
                "checkpoint": str(ckpt),
                "spec": spec.name,
                "data": corpus.source,
                "split": split,
                "documents": [d.name for d in chosen],
                **result.to_json(),
                "xz_bpb": xz,
                **({"xz_note": xz_note} if xz_note else {}),
            }
        )
        return 0
    print(f"checkpoint: {ckpt} ({spec.name})")
    what = "validation split" if split == "validation" else ("training split" if split == "train" else "whole file")
    print(
        f"{split}: {result.bpb:.4f} bits per byte on {result.bytes:,} bytes of {corpus.source} "
        f"({what}, {len(chosen)} documents)"
    )
    print(f"xz -9e:     {xz:.4f} bits per byte on the same bytes")
    if xz_note:
        print(f"aunet: note: {xz_note}", file=sys.stderr)
    per = ", ".join(f"level {i}: {k:.2f}" for i, k in enumerate(result.bytes_per_segment, start=1))
    if per:
        print(f"bytes per segment: {per}")
    return 0


def _run_data(run: Any) -> str | None:
    """The data a run was trained on: None for the embedded corpus, else its path (which must
    still be there). Checkpoints of older versions record it only in the run's run.json."""
    record = run.data
    if not record:
        from aunet.jobs.runs.directory import read_record

        old = read_record(run.checkpoint.parent.parent) if run.checkpoint.parent.name == "checkpoints" else None
        if old is None:
            raise InputError(f"checkpoint {run.checkpoint} does not record its training data; give --data")
        record = {"data": old.data}
    path = record.get("data")
    if path is not None and not Path(path).exists():
        raise InputError(f"the run was trained on {path}, which is not on this machine; give --data")
    if path is not None:
        _check_recorded(Path(path), record.get("fingerprint") or {})
    return path


#: Entries a run's recorded data folder may hold beyond the files its fingerprint lists, before
#: ``aunet eval`` refuses to read it (a tampered meta.json could name ``/usr``).
EXTRA_ENTRIES = 10_000


def _check_recorded(path: Path, fingerprint: dict[str, Any]) -> None:
    """A run's recorded data path, checked against its fingerprint before anything is read: a
    folder must hold no far larger tree than the files the run read (a bounded walk), a file
    must be one the fingerprint names. What a checkpoint records is not trusted to point
    anywhere: it is the checkpoint's own text."""
    files = [f for f in fingerprint.get("files", []) if isinstance(f, dict)]
    if fingerprint.get("embedded"):
        raise InputError(f"the checkpoint records data at {path} but an embedded corpus's fingerprint; give --data")
    if path.is_dir():
        limit = len(files) + EXTRA_ENTRIES
        seen = 0
        for _, dirs, names in os.walk(path):
            seen += len(dirs) + len(names)
            if seen > limit:
                raise InputError(
                    f"the run's recorded data folder {path} holds more than {limit:,} entries, far more "
                    f"than the {len(files):,} file(s) the run read; give --data to evaluate"
                )
        return
    if files and path.name not in {f.get("name") for f in files}:
        raise InputError(
            f"the run's recorded data {path} is not the file it read ({files[0].get('name')!r}); give "
            "--data to evaluate"
        )


def _eval_streamed(run: Any, args: argparse.Namespace) -> int:
    """``aunet eval`` of a run that streamed its corpus: its validation documents read lazily, up
    to the bytes its own final evaluation read (``train.eval.final_bytes``; all by default)."""
    from aunet.jobs.data.corpus import fingerprint_changes, model_encoding
    from aunet.jobs.data.source import training_text
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runtime.devices import model_autocast
    from aunet.jobs.train.metrics import Progress

    if args.split not in (None, "validation"):
        raise InputError(
            f"--split {args.split}: the run streamed its corpus, which is evaluated on its validation "
            "split; give --data FILE to evaluate other text"
        )
    spec, model = run.spec, run.model
    path = _run_data(run)
    text = training_text(path, attrs.evolve(spec.train.data, stream=Streaming.ON))
    changes = fingerprint_changes(run.data.get("fingerprint") or {}, text.fingerprint)
    if changes:
        print(
            f"aunet: note: the run's data changed since training ({'; '.join(changes[:3])}); evaluating on it as "
            "it is now",
            file=sys.stderr,
        )
    limit = spec.train.eval.final_bytes
    stack = model_encoding(model)
    result = evaluate(
        model,
        text.validation(stack, limit),
        context=spec.model.context,
        batch_size=args.batch_size,
        limit_bytes=limit,
        progress=Progress(sys.stderr),
        autocast=model_autocast(model),
    )
    xz = text.xz_bpb(limit)
    what = "the whole validation split" if limit is None else f"the first {limit:,} bytes of the validation split"
    if args.json:
        _print_json(
            {
                "checkpoint": str(run.checkpoint),
                "spec": spec.name,
                "data": text.source,
                "split": "validation",
                "streamed": True,
                **result.to_json(),
                "xz_bpb": xz,
            }
        )
        return 0
    print(f"checkpoint: {run.checkpoint} ({spec.name})")
    print(f"validation: {result.bpb:.4f} bits per byte on {result.bytes:,} bytes of {text.source} ({what}, streamed)")
    print(f"xz -9e:     {xz:.4f} bits per byte on the same bytes")
    return 0


#: Below this many bytes, ``xz -9e``'s figure is mostly its container (about 60 bytes of headers).
XZ_MEANINGFUL = 10_000


def _xz_note(n_bytes: int) -> str | None:
    if n_bytes >= XZ_MEANINGFUL:
        return None
    return (
        f"xz's figure means little on {n_bytes:,} bytes: its container alone takes about 60 bytes "
        f"(480 bits), {480 / max(n_bytes, 1):.1f} bits per byte here"
    )


def cmd_generate(args: argparse.Namespace) -> int:
    import codecs
    import warnings

    from aunet.jobs.inference.generate import check_levels_source, generate
    from aunet.jobs.runtime.devices import default_decode_threads

    if args.top_p is not None and args.top_p > 1:
        raise InputError(f"--top-p must be at most 1, got {args.top_p}")
    stops = [s.encode("utf-8", "surrogateescape") for s in args.stop]
    if any(not s for s in stops):
        raise InputError("--stop: an empty string would end every row at once; give at least one character")
    prompts = (
        read_prompts(args.prompts)
        if args.prompts is not None
        else [p.encode("utf-8", "surrogateescape") for p in args.prompt or [""]]
    )
    from aunet.jobs.runs.directory import load_run

    run = load_run(args.ckpt, device=args.device)
    model = run.model
    check_levels_source(model, args.levels)  # before any prompt is echoed
    device = next(model.parameters()).device
    rows = min(len(prompts), args.batch_size)
    threads = default_decode_threads(rows, device) if args.threads == "auto" else None
    options = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "stop": stops,
        "threads": threads,
        "levels": args.levels,
    }
    out = sys.stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if len(prompts) == 1 and not args.json:  # one prompt: streamed as it is decoded
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")
            out.write(text.decode(prompts[0]))  # invalid UTF-8 is shown as U+FFFD, whatever the terminal's encoding
            generate(
                model,
                prompts,
                args.max_bytes,
                on_bytes=lambda row, b: (out.write(text.decode(b)), out.flush()),
                **options,
            )
            out.write(text.decode(b"", final=True) + "\n")
        else:
            for first in range(0, len(prompts), args.batch_size):
                batch = prompts[first : first + args.batch_size]
                new = generate(model, batch, args.max_bytes, **options)
                for i, (prompt, produced) in enumerate(zip(batch, new), start=first):
                    if args.json:
                        _print_json(
                            {
                                "index": i,
                                "prompt": prompt.decode("utf-8", "replace"),
                                "text": produced.decode("utf-8", "replace"),
                                "bytes": len(produced),
                                "ended": _ending(produced, stops, args.max_bytes),
                            }
                        )
                    else:
                        out.write(f"--- {i + 1}/{len(prompts)} ---\n")
                        out.write((prompt + produced).decode("utf-8", "replace") + "\n")
                out.flush()
    for w in caught:
        print(f"aunet: note: {w.message}", file=sys.stderr)
    return 0


def _ending(produced: bytes, stops: Sequence[bytes], max_bytes: int) -> str:
    """Why a row ended: ``stop`` (a stop string), ``length`` (``--max-bytes``) or ``eos``."""
    if any(produced.endswith(s) for s in stops):
        return "stop"
    return "length" if len(produced) >= max_bytes else "eos"


#: ``aunet generate --prompts`` reads files up to this size (prompts are held in memory).
MAX_PROMPTS_FILE = 64 << 20


def read_prompts(path: str) -> list[bytes]:
    """The prompts of a ``--prompts`` file: one per line (blank lines skipped, line ends removed),
    or, for ``.jsonl``, one JSON string or object with a ``"prompt"`` (or ``"text"``) field per
    line. Any problem is one line naming the file and line."""
    p, size = input_file(path, what="--prompts")
    if size > MAX_PROMPTS_FILE:
        raise InputError(f"--prompts: '{path}' is {size:,} bytes; prompts files may be at most {MAX_PROMPTS_FILE:,}")
    prompts = []
    for number, line in enumerate(p.read_bytes().split(b"\n"), start=1):
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        if p.suffix.lower() != ".jsonl":
            prompts.append(line)
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"--prompts: {path}, line {number}: not a JSON value ({exc})") from None
        except RecursionError:
            raise InputError(f"--prompts: {path}, line {number}: JSON nested too deeply to read") from None
        if isinstance(record, dict):
            record = record.get("prompt", record.get("text"))
        if not isinstance(record, str):
            raise InputError(
                f'--prompts: {path}, line {number}: expected a string or an object with a "prompt" '
                '(or "text") string field'
            )
        prompts.append(record.encode("utf-8", "surrogatepass"))
    if not prompts:
        raise InputError(f"--prompts: '{path}' holds no prompts (every line is blank)")
    return prompts


def cmd_export(args: argparse.Namespace) -> int:
    from aunet.integrations.hf import export  # an InputError naming the extra when transformers is missing

    out = export(args.ckpt, args.out)
    print(f"exported to {out}: AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)")
    return 0


def _eval_suite(spec: Any, model: Any, ckpt: Any, args: argparse.Namespace) -> int:
    from aunet.jobs.data.corpus import Document, encode_documents, model_encoding, xz_bits_per_byte
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.inference.suites import suite_texts
    from aunet.jobs.runtime.devices import model_autocast

    stack = model_encoding(model)
    rows = []
    for text in suite_texts(args.suite, args.only):
        docs = encode_documents([Document(text.file, text.data)], stack)
        result = evaluate(
            model, docs, context=spec.model.context, batch_size=args.batch_size, autocast=model_autocast(model)
        )
        rows.append(
            {
                "file": text.file,
                "bcp47": text.tag,
                "name": text.name,
                **result.to_json(),
                "xz_bpb": xz_bits_per_byte(text.data),
            }
        )
    if args.json:
        _print_json({"checkpoint": str(ckpt), "spec": spec.name, "suite": args.suite, "languages": rows})
        return 0
    print(f"checkpoint: {ckpt} ({spec.name}), suite {args.suite}")
    print(f"{'file':<22} {'language':<34} {'bpb':>7} {'xz -9e':>7} {'bytes':>8}  bytes per segment")
    for r in rows:
        per = " ".join(f"{k:.2f}" for k in r["bytes_per_segment"])
        print(f"{r['file']:<22} {r['name'][:34]:<34} {r['bpb']:>7.3f} {r['xz_bpb']:>7.3f} {r['bytes']:>8,}  {per}")
    return 0


def _visible_text(data: bytes) -> str:
    """Bytes for a terminal: UTF-8 where valid, U+FFFD where not."""
    return data.decode("utf-8", "replace")


def _split_suite(stack: Any, args: argparse.Namespace) -> int:
    from aunet.jobs.inference.suites import LONG_BYTES, split_suite, suite_texts

    stats = split_suite(stack, suite_texts(args.suite, args.only))
    kinds = [s.kind for s in stack.splitters]
    if args.json:
        _print_json({"suite": args.suite, "splitters": kinds, "languages": [s.to_json() for s in stats]})
        return 0
    depth = stack.depth
    head = " ".join(f"{'L' + str(i) + ' B/seg':>9}" for i in range(1, depth + 1))
    print(f"{'file':<22} {'language':<34} {head} {'>' + str(LONG_BYTES) + 'B':>7} {'in cluster':>10}")
    for s in stats:
        cells = " ".join(f"{k:>9.2f}" for k in s.bytes_per_segment)
        print(
            f"{s.text.file:<22} {s.text.name[:34]:<34} {cells} {100 * s.long_share:>6.1f}% {100 * s.inside_share:>9.1f}%"
        )
    if depth:
        means = [s.bytes_per_segment[0] for s in stats]
        print(
            f"\n{len(stats)} texts; level-1 bytes per segment from {min(means):.2f} to {max(means):.2f}; "
            f"{sum(s.long_share > 0.01 for s in stats)} with more than 1% of level-1 segments over {LONG_BYTES} bytes; "
            f"mean share of boundaries inside a grapheme cluster {100 * statistics.fmean(s.inside_share for s in stats):.2f}%"
        )
    return 0


_VISIBLE = {0x0A: "⏎\n", 0x0D: "␍", 0x09: "→"}


def render_segments(data: bytes, levels: Any, level: int) -> str:
    """The text with '|' after every boundary of ``level`` or higher; line breaks drawn as ⏎,
    tabs as →, other control characters and invalid bytes as \\xNN."""
    out: list[str] = []
    start = 0
    cuts = [i + 1 for i, lv in enumerate(levels.tolist()) if lv >= level]
    for end in [*cuts, len(data)]:
        if end > start:
            out.append(_visible(data[start:end]))
            if end in cuts:
                out.append("|")
        start = end
    return "".join(out)


def _visible(chunk: bytes) -> str:
    text = chunk.decode("utf-8", "backslashreplace")
    return "".join(_VISIBLE.get(ord(c), f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text)


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


Command = Callable[[argparse.Namespace], int]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
