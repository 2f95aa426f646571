"""``aunet score``: how many bits per byte a trained run needs for a text (an example command).

A third-party command adds itself exactly as aunet's own commands do: a hook implementation of
``aunet_add_commands``, found through an entry point of the ``aunet.commands`` group. It uses
only aunet's public pieces: the shared options (``aunet.cli.options``), ``aunet.load_run`` and
the run's ``encoding`` (what the model reads: bytes and levels, or a BPE run's tokens), and the
evaluation that ``aunet eval`` runs.
"""

from __future__ import annotations

import argparse
import sys

import aunet
from aunet.cli.options import Commands, positive_int, print_json, runtime_options
from aunet.core.errors import InputError
from aunet.core.hookspecs import hookimpl


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command("score", help="bits per byte of a text under a trained run", run=score)
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="STR", help="the text to score")
    text.add_argument("--file", metavar="PATH", help="a file whose bytes to score")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="rows per forward (default 8)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    runtime_options(p)


def score(args: argparse.Namespace) -> int:
    from aunet.jobs.inference.evaluate import evaluate

    if args.text is not None:
        data = args.text.encode("utf-8", "surrogateescape")
    else:
        try:
            with open(args.file, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InputError(f"--file: cannot read '{args.file}': {exc.strerror or exc}") from None
    if not data:
        raise InputError("nothing to score: give a non-empty --text or --file")
    run = aunet.load_run(args.ckpt, device=args.device)
    encoded = run.encoding.encode(data)  # BOS, the text's ids, EOS; one level per position
    result = evaluate(run.model, run.encoding, [encoded], context=run.spec.model.context, batch_size=args.batch_size)
    if args.json:
        print_json({"checkpoint": str(run.checkpoint), "spec": run.spec.name, **result.to_json()})
    else:
        print(
            f"{result.bpb:.4f} bits per byte over {len(data):,} bytes and the end of the text "
            f"({run.spec.name}, step {run.step})",
            file=sys.stdout,
        )
    return 0
