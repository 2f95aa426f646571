"""Many processes with PyTorch's own engine: ``torchrun ... -m aunet train --parallel ddp|fsdp``.

* **Launch.** The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``...): NCCL on CUDA, one device per local rank; gloo on a CPU.
  ``--parallel`` other than ``none`` outside torchrun is one error that shows the command.
* **DDP** (``DistributedDataParallel``): every process holds the model; gradients are averaged,
  and only on the last micro-batch of gradient accumulation (``no_sync`` before).
* **FSDP2** (``torch.distributed.fsdp.fully_shard``): every transformer block, then every stage,
  then the root are sharded; with ``precision = "bfloat16"`` parameters run in bf16 and gradients
  are reduced in float32 (``MixedPrecisionPolicy``). Gradient sync is likewise skipped on all but
  the last micro-batch.
* **Activation checkpointing** (``train.activation_checkpointing``): ``full`` recomputes every
  transformer block in the backward pass, ``selective`` every second one (torchtitan's layer
  policy); a stage names the modules worth it (``Stage.checkpointable``).
* **The same model whatever the world size.** Every process draws the same global micro-batch
  (the spec's ``batch_size`` rows) and keeps its contiguous share; each row's loss is divided by
  the micro-batch's global number of predicted positions (counted on the host, where every
  process has the whole batch), times the world size that the gradient average divides out. N
  processes therefore compute the single-process gradient, up to the order of float sums.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import attrs

from aunet.core.errors import InputError
from aunet.core.spec import Checkpointing
from aunet.jobs.config import Parallel

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@attrs.frozen
class World:
    """This process's place among the processes of a run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    parallel: Parallel = Parallel.NONE

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.parallel is not Parallel.NONE

    def share(self, rows: int) -> slice:
        """This process's rows of a micro-batch of ``rows`` rows."""
        each = rows // self.size
        return slice(self.rank * each, (self.rank + 1) * each)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce(self, tensor: Any, op: str = "sum") -> Any:
        """``tensor`` reduced over every process (in place; returned for chaining)."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        return tensor

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (plain data), in rank order, on every process."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out


SINGLE = World()


class Placement(NamedTuple):
    """Where ``process_group`` puts this process: the run's world and this process's device."""

    world: World
    device: Any  # torch.device


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARS)


def torchrun_command(parallel: Parallel) -> str:
    return f"torchrun --nproc-per-node N -m aunet train ... --parallel {parallel.value}"


@contextlib.contextmanager
def process_group(parallel: Parallel, device_request: Any, *, resume: bool = False) -> Iterator[Placement]:
    """The run's ``World`` and this process's device, with the process group up while inside."""
    import torch

    from aunet.jobs.runtime.devices import resolve_device

    if not launched_by_torchrun():
        if parallel is not Parallel.NONE:
            alone = (
                f"; or add --parallel none to resume it on this one process (a {parallel.value} checkpoint "
                "resumes on any number of processes)"
                if resume
                else ""
            )
            raise InputError(
                f"--parallel {parallel.value} needs the processes torchrun starts: "
                f"{torchrun_command(parallel)} (add --nnodes M --rdzv-backend c10d --rdzv-endpoint "
                f"HOST:PORT for several machines){alone}"
            )
        yield Placement(SINGLE, resolve_device(device_request))
        return
    size = int(os.environ["WORLD_SIZE"])
    if parallel is Parallel.NONE:
        if size > 1:
            raise InputError(
                f"torchrun started {size} processes, but --parallel is none; add --parallel ddp or --parallel fsdp"
            )
        yield Placement(SINGLE, resolve_device(device_request))
        return
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = resolve_device(device_request)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, **({"device_id": device} if device.type == "cuda" else {}))
    try:
        yield Placement(World(rank, size, local, parallel), device)
    finally:
        dist.destroy_process_group()


def checkpoint_blocks(model: Any, mode: Checkpointing) -> None:
    """Wrap the stages' checkpointable modules so their activations are recomputed in backward."""
    if mode is Checkpointing.NONE:
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for stage in stages(model):
        blocks = stage.checkpointable()
        container = getattr(stage, "blocks", None)
        for i, block in enumerate(blocks):
            if mode is Checkpointing.SELECTIVE and i % 2:
                continue
            if container is not None:
                container[i] = checkpoint_wrapper(block)


def stages(model: Any) -> list[Any]:
    return [*model.encoders, model.trunk, *model.decoders]


def parallelize(model: Any, world: World, *, bfloat16: bool, device: Any) -> Any:
    """The module the trainer calls: DDP around the model, or the model sharded with FSDP2."""
    import torch

    if world.parallel is Parallel.DDP:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if world.parallel is Parallel.FSDP:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if bfloat16
            else MixedPrecisionPolicy()
        )
        for stage in stages(model):
            for block in stage.checkpointable():
                fully_shard(block, mp_policy=policy)
                for method in getattr(block, "forward_methods", ()):  # decoding's entry points gather too
                    register_fsdp_forward_method(block, method)
            fully_shard(stage, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    return model


@contextlib.contextmanager
def gradient_sync(module: Any, world: World, *, last: bool) -> Iterator[None]:
    """Synchronise gradients on the last micro-batch only."""
    if world.parallel is Parallel.DDP and not last:
        with module.no_sync():
            yield
        return
    if world.parallel is Parallel.FSDP:
        module.set_requires_gradient_sync(last)
    yield
