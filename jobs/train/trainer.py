"""The trainer: one optimizer step at a time, as components other code can drive.

``Trainer.step()`` is one optimizer step (``grad_accum`` micro-batches of forward and backward,
gradient clipping, the AdamW update): the one thing the training loop (``aunet.jobs.train.loop``),
profiling and the benchmarks share. It never synchronises with the host: the step's figures come
back as device tensors (``StepResult``) that the metric writers read at logging steps only.

Components and the config table each owns:

* ``TrainingData`` (``aunet.jobs.data.packing``): the batches and their position;
* ``Optimization``: AdamW and its schedule (the recipe keys of ``[train]``);
* ``Trainer``: model, device, precision, shapes; its ``state_dict()`` (a ``TrainerState``) is
  what a checkpoint holds;
* the checkpointer, metric writers, evaluator and sampler of the job (``[train.checkpoint]``,
  ``[train.metrics]``, ``[train.eval]``, ``[train.sample]``) live in ``aunet.jobs.train.loop``.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import attrs
import torch
from torch import Tensor

from aunet.core.errors import AunetError, InputError
from aunet.core.labels import label
from aunet.core.spec import ShapeMode, Spec
from aunet.jobs.config import Parallel, TrainSpec
from aunet.jobs.runtime.devices import autocast, rng_state, set_rng_state, use_bfloat16
from aunet.jobs.runtime.distributed import SINGLE, World, checkpoint_blocks, gradient_sync, parallelize
from aunet.jobs.train.schedule import schedule


class TrainingDiverged(AunetError):
    """The loss, the gradient or the weights stopped being finite (or sane)."""


#: Weights beyond this magnitude are no model any more: a far too high learning rate (1e30) leaves
#: finite weights of 1e28 after one step, which predict nothing and cannot be trained back. Such
#: a state is treated as a divergence, so no checkpoint of it is written. (Trained transformers'
#: weights stay within a few units; an embedding without weight decay, within tens.)
WEIGHT_LIMIT = 1e4


def _sane(p: Tensor) -> Tensor:
    """() bool: every value finite and within ``WEIGHT_LIMIT``."""
    return p.detach().abs().le(WEIGHT_LIMIT).all()


def parameter_groups(model: Any, config: TrainSpec) -> list[dict[str, Any]]:
    """Matrices decay; norms, embeddings (the byte embedding, the n-gram tables) and anything 1-D
    do not, unless ``decay_all``. With ``level_lr`` each of the two is split by level
    (``aunet.core.model.parameter_level``), every group carrying its ``lr_scale``."""
    from aunet.core.model import parameter_level

    groups: dict[tuple[bool, float], list[Tensor]] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        decays = config.decay_all or (p.dim() >= 2 and not name.startswith(("embed.", "ngram.")))
        scale = config.level_lr[parameter_level(name, len(config.level_lr) - 1)] if config.level_lr else 1.0
        groups.setdefault((decays, scale), []).append(p)
    return [
        {"params": params, "weight_decay": config.weight_decay if decays else 0.0, "lr_scale": scale}
        for (decays, scale), params in groups.items()
        if params or scale == 1.0
    ]


class Optimization:
    """AdamW with the paper's settings, its learning-rate schedule and gradient clipping."""

    def __init__(self, model: Any, config: TrainSpec) -> None:
        self.config = config
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            parameter_groups(model, config), lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps
        )

    def set_lr(self, step: int, fraction: float) -> float:
        lr = schedule(self.config, step, fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step(self) -> Tensor:
        """Clip, update, clear the gradients; the () gradient norm before clipping, on the device."""
        if self.config.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.parameters if p.grad is not None])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # Sharded parameters give a replicated DTensor norm; its local value is the whole norm.
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


@attrs.frozen(eq=False)
class TrainerState:
    """A trainer's whole state: what a checkpoint holds (``aunet.jobs.train.checkpointer`` writes
    and reads it in the checkpoint format of ``aunet.jobs.runs.checkpoint``)."""

    weights: dict[str, Tensor]  # the model's, by parameter name
    optimizer: dict[str, Any]  # torch's optimizer state dict, keyed by parameter name
    step: int  # optimizer steps done
    elapsed: float  # seconds spent in steps
    bytes_seen: int  # bytes the steps read
    data: dict[str, Any]  # the data stream's position
    rng: tuple[Any, ...]  # RNG states: this process's when saved; every process's, by rank, when read
    whole: bool = True  # the tensors are whole (False: this process's FSDP shards)


class StepResult(NamedTuple):
    """One optimizer step's figures. Tensors stay on the device until something reads them."""

    step: int  # the step just done (1-based)
    loss: Tensor  # () mean next-byte loss in nats over the micro-batches
    grad_norm: Tensor  # () before clipping
    predicted: Tensor  # () positions predicted
    segments: Tensor  # (L,) positions kept per level 1..L
    dropped: Tensor  # (L,) boundaries dropped by static shapes
    lr: float
    bytes: int  # bytes read (rows x positions, all micro-batches)
    seconds: float  # wall time of the call (on CUDA: until the work is queued)
    level_loss: Tensor | None = None  # () the level head's loss (``model.level_loss`` > 0), as ``loss``
    router_loss: Tensor | None = None  # () the routers' weighted auxiliary losses (a routed spec)


class Trainer:
    """A model, its optimization and its data on one device; ``step()`` trains one step. In a
    distributed run (``world``) the model is wrapped (DDP) or sharded (FSDP2) here, and every
    process keeps its share of each micro-batch (``aunet.jobs.runtime.distributed``)."""

    def __init__(self, spec: Spec, model: Any, *, data: Any, device: Any, world: World = SINGLE) -> None:
        self.spec = spec
        self.config = spec.train
        self.model = model
        self.device = device
        self.doc_mask = spec.model.doc_mask
        self.level_weight = spec.model.level_loss
        self.routed = any(spec.routed)
        self.data = data
        self.world = world
        self.bfloat16 = use_bfloat16(spec.train.precision, device)
        if world.distributed and spec.train.batch_size % world.size:
            raise InputError(
                f"train.batch_size {spec.train.batch_size} does not divide among {world.size} processes; "
                "every process takes an equal share of each micro-batch: use a multiple of "
                f"{world.size}"
            )
        checkpoint_blocks(model, spec.train.activation_checkpointing)
        self.module = parallelize(model, world, bfloat16=self.bfloat16, device=device)
        self.optimization = Optimization(model, spec.train)
        self.forward = torch.compile(self.module) if spec.train.compile else self.module
        self.eager = spec.train.shapes is ShapeMode.EAGER
        self.step_count = 0
        self.elapsed = 0.0  # seconds spent in step()
        self.bytes_seen = 0  # rows x positions read so far
        # The first step whose loss or gradient norm was not finite (-1: none yet), kept on the
        # device so that checking it costs nothing until someone asks.
        self._bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_loss = torch.zeros((), device=device)
        self._bad_norm = torch.zeros((), device=device)

    def autocast(self) -> Any:
        return autocast(self.device, bfloat16=self.bfloat16)

    def step(self, fraction: float) -> StepResult:
        """One optimizer step; ``fraction`` of the budget done decides the learning rate."""
        started = time.perf_counter()
        self.model.train()
        lr = self.optimization.set_lr(self.step_count, fraction)
        accum = self.config.grad_accum
        depth = self.model.depth
        loss = torch.zeros((), device=self.device)
        weight = self.level_weight
        level_loss = torch.zeros((), device=self.device) if weight else None
        router_loss = torch.zeros((), device=self.device) if self.routed else None
        predicted = torch.zeros((), dtype=torch.long, device=self.device)
        segments = dropped = torch.zeros(depth, dtype=torch.long, device=self.device)
        n_bytes = 0
        for micro in range(accum):
            whole = self.data.next()
            n_bytes += whole.n_bytes
            # The micro-batch's predicted positions over all processes, counted on the host: the
            # divisor of every process's summed loss (times the world size the average divides out).
            divisor = max(whole.predicted, 1) / self.world.size
            batch = whole.rows(self.world.share(whole.rows_count)) if self.world.distributed else whole
            tokens, levels, targets = batch.tensors(self.device)
            capacity = batch.capacity(depth) if self.eager else None
            # A compiled model keeps one graph: always masked. Eagerly, rows of one document take
            # attention's plain causal path. ``model.doc_mask = false`` lets packed documents
            # attend to each other, as the reference trains.
            doc_mask = (self.config.compile or batch.several_documents) and self.doc_mask
            with gradient_sync(self.module, self.world, last=micro == accum - 1):
                with self.autocast():
                    out = self.forward(
                        tokens,
                        levels,
                        targets,
                        capacity=capacity,
                        doc_mask=doc_mask,
                        loss_divisor=divisor if self.world.distributed else None,
                    )
                objective = out.loss if level_loss is None else out.loss + weight * out.level_loss
                if router_loss is not None:  # the ratio losses, already weighted by their specs
                    objective = objective + out.router_loss
                with label("backward"):
                    (objective / accum).backward()
            loss = loss + out.loss.detach().float() / accum
            if level_loss is not None:
                level_loss = level_loss + out.level_loss.detach().float() / accum
            if router_loss is not None:
                router_loss = router_loss + out.router_loss.detach().float() / accum
            predicted = predicted + out.n_predicted
            segments = segments + out.segments
            dropped = dropped + out.dropped
        with label("optimizer"):
            norm = self.optimization.step()
        self.step_count += 1
        finite = torch.isfinite(loss) & torch.isfinite(norm)
        first = (self._bad_step < 0) & ~finite
        self._bad_step = torch.where(first, self.step_count, self._bad_step)
        self._bad_loss = torch.where(first, loss, self._bad_loss)
        self._bad_norm = torch.where(first, norm.float(), self._bad_norm)
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        self.bytes_seen += n_bytes
        return StepResult(
            self.step_count, loss, norm, predicted, segments, dropped, lr, n_bytes, seconds, level_loss, router_loss
        )

    def figures(self, result: StepResult) -> dict[str, Any]:
        """A step's figures on the host, over every process (a synchronisation point: call it at
        logging steps only). The loss is the global mean over predicted positions."""
        extra = {name: value for name in ("level_loss", "router_loss") if (value := getattr(result, name)) is not None}
        losses = torch.cat([result.loss.detach().view(1), *(value.detach().view(1) for value in extra.values())])
        counts = torch.cat([result.predicted.view(1), result.segments, result.dropped]).to(torch.long)
        if self.world.distributed:
            # Each process's loss is its share of the global mean times the world size.
            self.world.all_reduce(losses)
            losses = losses / self.world.size
            self.world.all_reduce(counts)
        losses = losses.tolist()
        loss = losses[0]
        norm = result.grad_norm
        depth = self.model.depth
        counts = counts.tolist()
        figures = {
            "loss": loss,
            "grad_norm": float(norm),
            "predicted": counts[0],
            "segments": counts[1 : 1 + depth],
            "dropped": counts[1 + depth :],
        }
        figures.update(zip(extra, losses[1:]))
        return figures

    def divergence(self) -> str | None:
        """Why the run stopped being finite, or None (reads the device: call it at logging steps
        and before a checkpoint is called good). In a distributed run every process returns the
        same answer."""
        local = [p._local_tensor if hasattr(p, "_local_tensor") else p for p in self.model.parameters()]
        bad_weights = (
            torch.stack([~_sane(p) for p in local]).any().long() if local else torch.zeros((), dtype=torch.long)
        )
        flags = torch.stack([self._bad_step.to(torch.long), bad_weights.to(self._bad_step.device)])
        self.world.all_reduce(flags, op="max")
        bad = int(flags[0])
        if bad >= 0:
            loss, norm = float(self._bad_loss), float(self._bad_norm)
            what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            return f"the {what} became {value} at step {bad}"
        if int(flags[1]):
            names = [
                n
                for n, p in self.model.named_parameters()
                if not bool(_sane(p._local_tensor if hasattr(p, "_local_tensor") else p))
            ]
            where = f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
            return (
                f"after step {self.step_count} some weight tensors are not finite or exceed {WEIGHT_LIMIT:.0e} in "
                f"magnitude{where}"
            )
        return None

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> TrainerState:
        """What a checkpoint needs to resume exactly. Keys are the parameters' names
        (``torch.distributed.checkpoint.state_dict``), whatever wraps or shards the model; under
        FSDP2 the tensors are this process's shards."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        weights, optimizer = get_state_dict(self.module, self.optimization.optimizer)
        return TrainerState(
            weights,
            optimizer,
            self.step_count,
            self.elapsed,
            self.bytes_seen,
            self.data.state_dict(),
            (rng_state(),),
            whole=self.world.parallel is not Parallel.FSDP,
        )

    def load_state_dict(self, state: TrainerState) -> list[str]:
        """Restore a ``state_dict()`` (whole, as one process wrote it or a sharded checkpoint read
        whole; or this process's shards); returns notices for what this machine cannot restore."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        options = StateDictOptions(full_state_dict=state.whole and self.world.parallel is Parallel.FSDP)
        set_state_dict(
            self.module,
            self.optimization.optimizer,
            model_state_dict=state.weights,
            optim_state_dict=state.optimizer,
            options=options,
        )
        self.step_count = state.step
        self.elapsed = state.elapsed
        self.bytes_seen = state.bytes_seen
        self.data.load_state_dict(state.data)
        rng = state.rng
        return set_rng_state(rng[self.world.rank] if self.world.rank < len(rng) else rng[0])
