"""The training loop's checkpointer (``[train.checkpoint]``): writes the trainer's state every
``every`` steps and at the end, keeping ``keep``, and restores it on a resume.

A resume finds and verifies its checkpoint once (``aunet.jobs.train.resume``, every file's
SHA-256); the checkpointer reads that verified checkpoint without hashing it again. The format
on disk is ``aunet.jobs.runs.checkpoint``'s, written by ``aunet.jobs.runs.saving``; the trainer's
state is a ``TrainerState``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aunet.core.convert import dump_spec
from aunet.core.spec import Spec
from aunet.jobs.config import CheckpointSpec, Parallel
from aunet.jobs.runs import checkpoint, saving
from aunet.jobs.runs.checkpoint import Verified, flatten_optimizer, unflatten_optimizer
from aunet.jobs.runs.directory import RunRecord
from aunet.jobs.runtime.distributed import World
from aunet.jobs.train.trainer import Trainer, TrainerState, TrainingDiverged

if TYPE_CHECKING:
    from aunet.core.encoding import Encoding


class Checkpointer:
    """Saves and restores a trainer: ``load`` once at the start of a resume, ``maybe_save`` after
    every step, ``save`` at the end."""

    def __init__(
        self,
        run_dir: Path,
        config: CheckpointSpec,
        spec: Spec,
        record: RunRecord,
        world: World,
        encoding: Encoding,
        resumed: Verified | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.config = config
        self.world = world
        self.resumed = resumed
        # A checkpoint is self-contained: the spec and the data record are in its meta.json too,
        # and what the encoding needs beyond it (a BPE model's tokenizer, JSON as everything aunet
        # reads back).
        self.meta = {
            "spec_name": spec.name,
            "spec": dump_spec(spec),
            "run": {"data": record.data, "fingerprint": record.fingerprint},
        }
        if (saved := encoding.saved()) is not None:
            self.meta["tokenizer"] = saved
        self.last = resumed.path if resumed is not None else None
        self.saved_step = resumed.step if resumed is not None else -1

    # -- reading -------------------------------------------------------------------------------

    def load(self, trainer: Trainer) -> list[str]:
        """Restore the verified checkpoint this run resumes into ``trainer``, whatever wrote it
        (one process, DDP or FSDP with any number of processes) and however many processes read
        it; notices for what this machine cannot restore."""
        found = self.resumed
        if found is None:
            return []
        try:
            return trainer.load_state_dict(self._read(found, trainer))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise checkpoint.CheckpointError(
                f"checkpoint {found.path} does not fit the run's model: {str(exc).splitlines()[-1].strip()}"
            ) from None

    def _read(self, found: Verified, trainer: Trainer) -> TrainerState:
        if found.meta.get("format") == "sharded" and self.world.parallel is Parallel.FSDP:
            checkpoint.check_resumable(found)
            mine = trainer.state_dict()  # this process's shards, as the target
            target = {f"model.{k}": v for k, v in mine.weights.items()} | flatten_optimizer(mine.optimizer)[0]
            checkpoint.load_sharded_into(found, target)
            weights = {k.removeprefix("model."): v for k, v in target.items() if k.startswith("model.")}
            tensors = {k: v for k, v in target.items() if k.startswith("optimizer.")}
            return _state(weights, tensors, checkpoint.read_trainer_json(found.path), whole=False)
        files = checkpoint.load_trainer(found)
        return _state(files.weights, files.tensors, files.counters, whole=True)

    # -- writing -------------------------------------------------------------------------------

    def maybe_save(self, trainer: Trainer) -> None:
        """A checkpoint every ``every`` steps."""
        if trainer.step_count % self.config.every == 0:
            self.save(trainer)

    def save(self, trainer: Trainer) -> Path:
        """A checkpoint of the trainer now, once its weights are known to be finite."""
        problem = trainer.divergence()
        if problem:
            raise self.diverged(problem)
        state = trainer.state_dict()
        tensors, optimizer = flatten_optimizer(state.optimizer)
        (rng,) = state.rng
        counters = {
            "step": state.step,
            "elapsed": state.elapsed,
            "bytes_seen": state.bytes_seen,
            "data": state.data,
            "optimizer": optimizer,
            "rng": rng,
            "rng_by_rank": self.world.gather(rng),
        }
        meta = {
            **self.meta,
            "elapsed_s": trainer.elapsed,
            "processes": self.world.size,
            "parallel": self.world.parallel.value,
        }
        self.last = saving.save(
            self.run_dir,
            trainer.step_count,
            state.weights,
            tensors,
            counters,
            keep=self.config.keep,
            extra_meta=meta,
            world=self.world,
            sharded=self.world.parallel is Parallel.FSDP,
        )
        self.saved_step = trainer.step_count
        return self.last

    def diverged(self, problem: str) -> TrainingDiverged:
        """The error of a run that stopped being sane (``Trainer.divergence``), with advice that
        can work: every checkpoint written is sane, so the last one can be resumed from."""
        if self.last is None:
            return TrainingDiverged(
                f"{problem}; stopped without saving; no checkpoint was written yet: start the "
                "run again with a lower train.lr (or train.clip)"
            )
        return TrainingDiverged(
            f"{problem}; stopped without saving; the last good checkpoint is {self.last.name}: "
            "resume from it with a lower rate (--resume --set train.lr=...), or train.clip"
        )


def _state(weights: dict, tensors: dict, counters: dict, *, whole: bool) -> TrainerState:
    """A ``TrainerState`` from a checkpoint's tensors and trainer JSON."""
    optimizer = unflatten_optimizer(
        {k: v for k, v in tensors.items() if k.startswith("optimizer.")}, counters["optimizer"]
    )
    rng = counters.get("rng_by_rank") or [counters["rng"]]
    return TrainerState(
        weights,
        optimizer,
        int(counters["step"]),
        float(counters["elapsed"]),
        int(counters["bytes_seen"]),
        counters["data"],
        tuple(rng),
        whole=whole,
    )
