"""``aunet profile``: training steps under the profiler, per attention backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from aunet.cli.options import (
    DEFAULT_SPEC,
    Commands,
    checked,
    number,
    positive_int,
    print_json,
    runtime_options,
)
from aunet.core.errors import InputError, did_you_mean, known_list
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Family, default_registry


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command(
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
    p.add_argument("--context", type=positive_int, metavar="T", help="bytes per row (default: the spec's)")
    p.add_argument("--batch", type=positive_int, metavar="B", help="rows per step (default: the spec's)")
    p.add_argument("--steps", type=positive_int, default=3, metavar="N", help="profiled steps (default 3)")
    p.add_argument(
        "--warmup",
        type=number(int, 0, strict=False, maximum=1000),
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
    runtime_options(p)
    p.set_defaults(run=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from aunet.jobs.config import load_spec_with_overrides
    from aunet.jobs.runtime.devices import resolve_device
    from aunet.jobs.train.profiling import format_summary, profile_backends

    spec = load_spec_with_overrides(args.spec, args.overrides)
    checked(spec, args.spec, args.overrides)
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
        print_json({"spec": spec.name, "profiles": [s.to_json() for s in summaries]})
        return 0
    for summary in summaries:
        print(format_summary(summary))
    print(
        f"traces: tensorboard --logdir {args.out}  (PyTorch Profiler tab), or open a *.pt.trace.json in ui.perfetto.dev"
    )
    return 0
