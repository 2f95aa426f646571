"""How a run stops on a signal: after the current step, with a checkpoint, every process at the
same step."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import torch
import torch.distributed as dist

from aunet.jobs.runtime.distributed import World

#: Signals that stop a run with a checkpoint: Ctrl-C, a scheduler's or torchrun's SIGTERM (sent
#: before a SIGKILL), a closed terminal's SIGHUP.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: A second signal this soon after the first is the same request (a scheduler signals every
#: process of a job while torchrun forwards the same signal to its workers).
SAME_REQUEST_S = 1.0


class StopFlag:
    """SIGINT, SIGTERM and SIGHUP set the flag: the loop stops after the step, with a checkpoint.
    A second Ctrl-C (SIGINT, a second or more later) interrupts at once; repeated SIGTERM or SIGHUP
    change nothing (the checkpoint is being written; SIGKILL remains). Once training is over (the
    last checkpoint written: ``trained``), any of them stops at once, since nothing can be lost.
    In a distributed run the processes agree on stopping (a small all-reduce on a gloo group, on
    the host), so that all stop at the same step."""

    def __init__(self, world: World) -> None:
        self.requested = False
        self.signum: int | None = None
        self.world = world
        self._group: Any = None
        self._previous: dict[int, Any] = {}
        self._when = 0.0
        self._done = False

    def agreed(self) -> bool:
        if not self.world.distributed:
            return self.requested
        if self._group is None:
            self._group = dist.new_group(backend="gloo")
        flag = torch.tensor([self.signum if self.requested else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        if int(flag.item()) and not self.requested:  # another process was signalled
            self.requested, self.signum = True, int(flag.item())
        return bool(flag.item())

    def trained(self) -> None:
        """Training is over and saved: a signal from now on stops at once."""
        self._done = True

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self._done:
            raise KeyboardInterrupt
        if self.requested:
            if signum == signal.SIGINT and now - self._when > SAME_REQUEST_S:
                raise KeyboardInterrupt
            return
        self.requested, self.signum, self._when = True, signum, now

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if kind is not None and self._previous and self.world.distributed:
            # An error is on its way out of this worker; torchrun answers the first worker that
            # exits by sending SIGTERM to the others, which must not kill them before they print
            # their own line. The process ends right after.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._previous = {}
