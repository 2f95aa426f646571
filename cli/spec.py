"""``aunet spec check|list|show``: specs validated, listed and shown resolved, with their sizes."""

from __future__ import annotations

import argparse

import attrs

from aunet.cli.options import (
    Commands,
    Parser,
    checked,
    is_model_spec,
    print_json,
)
from aunet.core.errors import AunetError
from aunet.core.hookspecs import hookimpl


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    spec = commands.add_command("spec", help="check or show a spec file")
    spec_sub = spec.add_subparsers(title="spec commands", metavar="COMMAND", parser_class=Parser)
    p = spec_sub.add_parser("check", help="validate spec files; every problem is listed with its path")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(run=cmd_spec_check)
    p = spec_sub.add_parser("list", help="the shipped specs, loadable by name from any directory")
    p.set_defaults(run=cmd_spec_list)
    p = spec_sub.add_parser("show", help="print the resolved spec, defaults filled in")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_spec_show)


def cmd_spec_check(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec

    issues: list[str] = []
    for file in args.files:
        try:
            spec = checked(load_spec(file), file)
        except AunetError as exc:
            issues.extend(exc.lines())
            continue
        kinds = ", ".join(level.splitter.kind for level in spec.levels[1:] if level.splitter) or "no pooling"
        what = "" if is_model_spec(spec) else ", splitting only: no stages"
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


def cmd_spec_show(args: argparse.Namespace) -> int:
    from aunet.core.spec import dump_spec, load_spec, spec_to_dict

    given = load_spec(args.file)
    spec = checked(given, args.file)  # resolved: contractions the spec leaves out are measured now
    sizes = None
    if is_model_spec(spec):
        from aunet.core.accounting import account

        measured = any(level.contraction is None for level in given.levels[1:])
        if spec.model.bpe and spec.model.tokenizer.bytes_per_token is None:
            from aunet.jobs.data.bpe import embedded_bytes_per_token, with_bytes_per_token

            spec = with_bytes_per_token(spec, embedded_bytes_per_token(spec.model.tokenizer.vocab_size))
            measured = True  # bytes per token, measured here
        sizes = attrs.evolve(account(spec), contraction_measured=measured)
    if args.json:
        print_json({"name": spec.name, "spec": spec_to_dict(spec), **(sizes.to_json() if sizes else {})})
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
