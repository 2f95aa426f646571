"""``aunet plugins``: every family's kinds, and every command, with where they come from."""

from __future__ import annotations

import argparse

from aunet.cli.options import Commands, print_json
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import default_registry


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command(
        "plugins",
        help="list the registered kinds of every family, and every command, with where they come from",
        run=cmd_plugins,
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = default_registry()
    listing = registry.listing()
    commands = [
        {
            "command": name,
            "plugin": o.plugin,
            "distribution": o.distribution,
            "version": o.version,
            "builtin": o.builtin,
        }
        for name, o in registry.commands.items()
    ]
    if args.json:
        plugins = [
            {"name": name, "distribution": o.distribution, "version": o.version, "builtin": o.builtin}
            for name, o in sorted(registry.plugins.items())
        ]
        print_json({"families": listing, "commands": commands, "plugins": plugins})
        return 0
    for family, entries in listing.items():
        print(f"{family}:")
        if not entries:
            print("  (none registered)")
        width = max((len(e["kind"]) for e in entries), default=0)
        for e in entries:
            origin = f"{e['distribution']} {e['version']}" if e["distribution"] else "registered in code"
            print(f"  {e['kind']:<{width}}  {origin} [{e['plugin']}]  {e['summary']}")
    print("commands:")
    width = max((len(c["command"]) for c in commands), default=0)
    for c in commands:
        print(f"  {c['command']:<{width}}  {c['distribution']} {c['version']} [{c['plugin']}]")
    return 0
