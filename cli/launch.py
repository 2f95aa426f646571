"""``aunet launch``: torchrun with aunet's manners.

``aunet launch --nproc-per-node 2 train --spec aunet3-tiny --parallel ddp`` is ``torchrun
--nproc-per-node 2 -m aunet train ...``: the same launcher (``torch.distributed.run``), the same
options before the aunet command, the same processes and environment. What differs is how it
ends. torchrun answers a worker that exits with an error by printing its own traceback
(``ChildFailedError``) and a failure table after the worker's one-line error; ``aunet launch``
prints nothing more than the workers did (each user error is already one ``aunet: error:``
line), names a worker that died without saying why (killed by a signal, a crash), and exits with
the workers' own status: 2 for a user error, 128 + N for a run stopped by signal N (torchrun
forwards SIGTERM, SIGINT and SIGHUP to the workers, which save a checkpoint and stop).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Iterator, Sequence

from aunet.cli.options import Commands
from aunet.core.errors import InputError
from aunet.core.hookspecs import hookimpl

#: torchrun's loggers that report a failed worker (the worker has said why itself).
ELASTIC_LOGGERS = ("torch.distributed.elastic", "torch.distributed.run")


@contextlib.contextmanager
def _quiet_elastic() -> Iterator[None]:
    before = {name: logging.getLogger(name).level for name in ELASTIC_LOGGERS}
    for name in ELASTIC_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def launch(argv: Sequence[str], commands: Sequence[str]) -> int:
    """Run ``torchrun OPTIONS -m aunet COMMAND ARGS`` for ``argv = OPTIONS COMMAND ARGS``."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    split = next((i for i, arg in enumerate(argv) if arg in commands), None)
    if split is None:
        raise InputError(
            "aunet launch: give torchrun's options, then an aunet command, e.g. aunet launch "
            "--nproc-per-node 2 train --spec aunet3-tiny --parallel ddp"
        )
    try:
        args = torchrun.get_args_parser().parse_args([*argv[:split], "--module", "aunet", *argv[split:]])
    except SystemExit as exc:  # argparse has printed the usage and the error
        return int(exc.code or 0) and 2
    try:
        with _quiet_elastic():
            torchrun.run(args)
    except ChildFailedError as exc:
        return _ended(exc)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


def _ended(exc: object) -> int:
    """The workers' own exit status; one line for a worker that died without saying why."""
    import sys

    failures = sorted(getattr(exc, "failures", {}).items())
    codes = [int(getattr(failure, "exitcode", 1)) for _, failure in failures]
    reported = any(code > 0 for code in codes)  # a worker that failed said why, and torchrun then
    for (rank, _), code in zip(failures, codes):  # stopped the others with SIGTERM: no news
        if code < 0 and not (reported and -code == signal.SIGTERM):  # killed: it could say nothing itself
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            print(f"aunet: error: [rank {rank}] the process was killed by {name}", file=sys.stderr)
    positive = [c for c in codes if c > 0]
    if positive:
        return positive[0]
    return 128 + (-codes[0]) if codes else 1


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    # Listed for --help; `aunet launch ...` is handled before parsing (torchrun's options come first).
    p = commands.add_command(
        "launch",
        help="torchrun for aunet: `aunet launch --nproc-per-node N train ... --parallel ddp`; "
        "errors stay one line, the exit status is the workers'",
        add_help=False,
    )
    p.add_argument(
        "torchrun", nargs=argparse.REMAINDER, help="torchrun's options, then an aunet command and its options"
    )
