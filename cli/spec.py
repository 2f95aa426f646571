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
    from aunet.jobs.config import load_spec

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
    from aunet.jobs.config import load_spec

    for name in shipped_spec_names():
        spec = load_spec(spec_path(name))
        kinds = ", ".join(level.splitter.kind for level in spec.levels[1:] if level.splitter) or "flat, no pooling"
        print(f"{name:<18} {len(spec.levels)} level{'s' if len(spec.levels) != 1 else ''} ({kinds})")
    return 0


def cmd_spec_show(args: argparse.Namespace) -> int:
    from aunet.core.convert import dump_spec, spec_to_dict
    from aunet.jobs.config import load_spec

    given = load_spec(args.file)
    spec = checked(given, args.file)  # resolved: contractions the spec leaves out are measured now
    sizes = None
    if is_model_spec(spec):
        from aunet.core.accounting import account

        measured = any(level.contraction is None and level.router is None for level in given.levels[1:])
        if spec.model.bpe and spec.model.tokenizer.bytes_per_token is None:
            from aunet.jobs.data.bpe import embedded_bytes_per_token, with_bytes_per_token

            spec = with_bytes_per_token(
                spec, embedded_bytes_per_token(spec.model.tokenizer.vocab_size, spec.model.tokenizer.trained_on)
            )
            measured = True  # bytes per token, measured here
        sizes = attrs.evolve(account(spec), contraction_measured=measured)
    if args.json:
        print_json({"name": spec.name, "spec": spec_to_dict(spec), **(sizes.to_json() if sizes else {})})
        return 0
    print(dump_spec(spec), end="")
    if sizes is not None:
        print(sizes.as_toml_comments())
    return 0
