"""``aunet train``: the main job (AUNET.md section 6).

AdamW (betas 0.9/0.95, eps 1e-8), weight decay on matrices only unless asked, linear warmup then
cosine to ``min_lr_ratio`` of the peak, gradient clipping, gradient accumulation, optional bf16
autocast and torch.compile, one seed for everything. Progress goes to stderr (a live line on a
terminal, periodic lines otherwise), metrics to ``metrics.jsonl`` and TensorBoard (``tb/``), and
checkpoints to ``checkpoints/`` (``aunet.core.checkpoint``).

Stopping. Ctrl-C (SIGINT) finishes the current step, writes a checkpoint and returns; a second
Ctrl-C stops at once, and the last complete checkpoint is still intact. A non-finite loss or
gradient stops the run without saving and names the step; the last good checkpoint is kept.

Resuming. ``--resume`` restores the weights, optimizer, schedule, RNG states and the data position
of the newest checkpoint and continues the same run: with a step budget the result is bit-identical
to an uninterrupted run on CPU.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs
import numpy as np

from aunet.core import checkpoint
from aunet.core.errors import AunetError, InputError
from aunet.core.spec import Precision, Shapes, Spec, dump_spec, parse_spec, resolve_spec

SPEC_FILE = "spec.toml"
RUN_FILE = "run.json"  # what the run was started on: the data path
METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(AunetError):
    """The loss or the gradient stopped being finite."""


@attrs.frozen
class RunSummary:
    """How a run ended."""

    run_dir: Path
    step: int
    interrupted: bool
    losses: tuple[float, ...]  # training loss (nats) of every step of this invocation
    val_bpb: float | None
    xz_bpb: float | None
    val_bytes: int
    sample: bytes | None
    checkpoint: Path | None


def stamp(spec: Spec) -> Spec:
    """The spec with the versions of aunet and every loaded plugin written into it."""
    import aunet
    from aunet.core.registry import default_registry

    versions = {"aunet": aunet.__version__}
    for name, origin in sorted(default_registry().plugins.items()):
        versions[f"plugin {name}"] = f"{origin.distribution or 'code'} {origin.version or ''}".strip()
    return attrs.evolve(spec, stamp=versions)


def schedule(spec: Spec, step: int, fraction: float) -> float:
    """Learning rate at optimizer step ``step`` (0-based), ``fraction`` of the budget done."""
    t = spec.train
    warm = min(1.0, (step + 1) / t.warmup) if t.warmup else 1.0
    fraction = min(max(fraction, 0.0), 1.0)
    cosine = t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * fraction))
    return t.lr * warm * cosine


def parameter_groups(model: Any, spec: Spec) -> list[dict[str, Any]]:
    """Matrices decay; norms, embeddings (and anything 1-D) do not, unless ``decay_all``."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if spec.train.decay_all or (p.dim() >= 2 and not name.startswith("embed.")):
            decay.append(p)
        else:
            plain.append(p)
    return [{"params": decay, "weight_decay": spec.train.weight_decay}, {"params": plain, "weight_decay": 0.0}]


class Progress:
    """A live status line on a terminal; a line every ``every`` steps otherwise."""

    def __init__(self, stream: IO[str], every: int) -> None:
        self.stream = stream
        self.every = every
        self.live = hasattr(stream, "isatty") and stream.isatty()

    def update(self, step: int, total: int | None, loss: float, bytes_per_s: float, eta_s: float | None) -> None:
        where = f"{step}/{total}" if total else f"{step}"
        eta = f"  ETA {int(eta_s // 60)}:{int(eta_s % 60):02d}" if eta_s is not None else ""
        line = (f"step {where}  loss {loss:.4f}  bpb {loss / math.log(2):.3f}  "
                f"{bytes_per_s / 1000:.1f} kB/s{eta}")  # fmt: skip
        if self.live:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
        elif step % self.every == 0:
            self.stream.write(line + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()


class _StopFlag:
    """SIGINT sets the flag (the loop stops after the step); a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading_main():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def apply_overrides(spec: Spec, overrides: list[str]) -> Spec:
    """``--set key=value``: dotted paths into the spec (``train.lr=1e-3``,
    ``levels[1].stage.layers=6``); values are TOML (strings may be bare)."""
    from aunet.core import toml
    from aunet.core.errors import SpecError, SpecIssue
    from aunet.core.spec import spec_to_dict

    data = spec_to_dict(spec)
    issues = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            issues.append(SpecIssue("--set", f"'{item}' is not key=value (e.g. train.lr=1e-3)"))
            continue
        try:
            value = toml.loads(f"v = {raw}")["v"]
        except toml.TOMLDecodeError:
            value = raw  # a bare string
        problem = _assign(data, key, value)
        if problem:
            issues.append(SpecIssue(f"--set {key}", problem))
    if issues:
        raise SpecError(issues)
    return parse_spec(toml.dumps(data), source="--set", name=spec.name)


def _assign(data: dict[str, Any], key: str, value: Any) -> str | None:
    import re

    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(node, list) or index >= len(node):
                return f"index {index} is out of range ({len(node) if isinstance(node, list) else 0} entries)"
            if last:
                node[index] = value
            else:
                node = node[index]
        else:
            if not isinstance(node, dict):
                return f"'{part}' does not name a table"
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return None


def _log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _rng_state() -> dict[str, Any]:
    import torch

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def train(spec: Spec | None, *, data: str | Path | None, out: str | Path, steps: int | None = None,
          minutes: float | None = None, resume: bool = False, stop_at: int | None = None,
          stream: IO[str] = sys.stderr, on_step: Callable[[int, float], None] | None = None) -> RunSummary:  # fmt: skip
    """Train (or resume) a run; see the module docstring."""
    import torch

    from aunet.core.data import Packer, Position, encode_documents, load_corpus, xz_bits_per_byte
    from aunet.core.evaluate import evaluate
    from aunet.core.model import build_model

    run_dir = Path(out)
    progress = Progress(stream, 10)
    state: dict[str, Any] | None = None
    weights = None
    if resume:
        found = checkpoint.latest(run_dir) if (run_dir / checkpoint.CHECKPOINTS).is_dir() else None
        if found is None:
            raise InputError(f"--resume: '{run_dir}' holds no checkpoint to resume; start a run there without --resume")
        run_spec = parse_spec((run_dir / SPEC_FILE).read_text(encoding="utf-8"), source=str(run_dir / SPEC_FILE))
        if spec is not None and _comparable(spec) != _comparable(run_spec):
            raise InputError(f"--resume: the run at '{run_dir}' was started with another spec; omit --spec "
                             "(and --set) to resume it as it was")  # fmt: skip
        spec = run_spec
        started_on = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("data")
        if data is not None and str(data) != str(started_on):
            raise InputError(f"--resume: the run at '{run_dir}' was started on --data {started_on or '(embedded)'}; "
                             "omit --data to resume it on the same data")  # fmt: skip
        data = started_on
        weights, state, meta = checkpoint.load(found)
        progress.message(f"resuming {run_dir} from {found.name} (step {meta['step']})")
    else:
        if (run_dir / SPEC_FILE).exists() or (run_dir / checkpoint.CHECKPOINTS).exists():
            raise InputError(f"--out: '{run_dir}' already holds a run; add --resume to continue it, or choose "
                             "another --out")  # fmt: skip
        if spec is None:
            raise InputError("no spec given")
        spec = stamp(resolve_spec(spec))
    if steps is not None or minutes is not None:
        spec = attrs.evolve(spec, train=attrs.evolve(spec.train, steps=steps, minutes=minutes if steps is None else None))
    t = spec.train
    if t.steps is None and t.minutes is None:
        raise InputError("no budget: give --steps N or --minutes M (or train.steps / train.minutes in the spec)")

    corpus = load_corpus(data)
    stack = spec.splitter_stack()
    train_docs = encode_documents(corpus.train, stack)
    val_docs = encode_documents(corpus.validation, stack)
    if not val_docs:
        raise InputError(f"the validation split of {corpus.source} is empty; give more text")
    context = spec.model.context
    packer = Packer(train_docs, context, t.seed)

    torch.manual_seed(t.seed)
    model = build_model(spec)
    optimizer = torch.optim.AdamW(parameter_groups(model, spec), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    step, position, elapsed = 0, Position(), 0.0
    if state is not None:
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        position = Position(*state["position"])
        _set_rng_state(state["rng"])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_text(run_dir / RUN_FILE, json.dumps({"data": None if data is None else str(data)}))
        checkpoint.atomic_write_text(run_dir / SPEC_FILE, dump_spec(spec))
    forward = torch.compile(model) if t.compile else model
    from aunet.core.model import ShapeMode

    shapes = ShapeMode.STATIC if t.shapes is Shapes.STATIC else ShapeMode.EAGER
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.precision is Precision.BFLOAT16)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    metrics_path = run_dir / METRICS_FILE
    budget_s = None if t.steps is not None else t.minutes * 60.0
    saved_step = step if state is not None else -1
    last_ckpt: Path | None = checkpoint.latest(run_dir) if state is not None else None
    losses: list[float] = []
    row_bytes = t.batch_size * t.grad_accum * context

    def save() -> Path:
        nonlocal saved_step, last_ckpt
        train_state = {"optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed,
                       "position": attrs.astuple(position), "rng": _rng_state()}  # fmt: skip
        meta = {"spec_name": spec.name, "elapsed_s": elapsed, "spec": dump_spec(spec)}  # self-contained
        last_ckpt = checkpoint.save(run_dir, step, model.state_dict(), train_state, keep=t.keep, extra_meta=meta)
        saved_step = step
        return last_ckpt

    def done() -> bool:
        if t.steps is not None:
            return step >= t.steps
        return elapsed >= budget_s

    interrupted = False
    model.train()
    with _StopFlag() as stop:
        while not done():
            if stop_at is not None and step >= stop_at:
                interrupted = True
                break
            if stop.requested:
                interrupted = True
                break
            started = time.perf_counter()
            fraction = step / t.steps if t.steps is not None else elapsed / budget_s
            lr = schedule(spec, step, fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total_loss = 0.0
            segments = dropped = predicted = None
            for _ in range(t.grad_accum):
                batch, position = packer.batch(position, t.batch_size)
                tokens, levels, targets = batch.tensors()
                with autocast:
                    output = forward(tokens, levels, targets, shapes=shapes)
                (output.loss / t.grad_accum).backward()
                total_loss += float(output.loss.detach()) / t.grad_accum
                segments = output.segments if segments is None else segments + output.segments
                dropped = output.dropped if dropped is None else dropped + output.dropped
                predicted = int(output.n_predicted) + (predicted or 0)
            if t.clip is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip))
            else:
                grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()
                                                                         if p.grad is not None])))  # fmt: skip
            if not (math.isfinite(total_loss) and math.isfinite(grad_norm)):
                what = "loss" if not math.isfinite(total_loss) else "gradient norm"
                value = total_loss if not math.isfinite(total_loss) else grad_norm
                good = f"the last good checkpoint is {last_ckpt.name}" if last_ckpt else "no checkpoint was written yet"
                writer.close()
                raise TrainingDiverged(f"the {what} became {value} at step {step + 1}; stopped without saving; "
                                       f"{good} (try a lower train.lr, or train.clip)")  # fmt: skip
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.perf_counter() - started
            elapsed += seconds
            losses.append(total_loss)
            if on_step is not None:
                on_step(step, total_loss)
            bytes_per_s = row_bytes / seconds
            if t.steps is not None:
                eta = (t.steps - step) * seconds
            else:
                eta = max(0.0, budget_s - elapsed)
            progress.update(step, t.steps, total_loss, bytes_per_s, eta)
            if step % t.log_every == 0 or step == 1:
                per_segment = [predicted / s if s else None for s in segments.tolist()]
                record = {"step": step, "loss": total_loss, "bpb": total_loss / math.log(2), "lr": lr,
                          "grad_norm": grad_norm, "bytes_per_s": bytes_per_s, "bytes_seen": step * row_bytes,
                          "elapsed_s": elapsed, "bytes_per_segment": per_segment,
                          "dropped": dropped.tolist()}  # fmt: skip
                _log(metrics_path, record)
                for key in ("loss", "bpb", "lr", "grad_norm", "bytes_per_s"):
                    writer.add_scalar(f"train/{key}", record[key], step)
                for i, (k, d) in enumerate(zip(per_segment, record["dropped"]), start=1):
                    if k is not None:
                        writer.add_scalar(f"levels/bytes_per_segment_{i}", k, step)
                    writer.add_scalar(f"levels/dropped_{i}", d, step)
            if step % t.eval_every == 0 and not done():
                result = evaluate(model, val_docs, context=context, batch_size=t.batch_size, limit_bytes=t.eval_bytes)
                _log(metrics_path, {"step": step, "val_bpb": result.bpb, "val_bytes": result.bytes})
                writer.add_scalar("val/bpb", result.bpb, step)
                progress.message(f"step {step}: validation {result.bpb:.4f} bits per byte ({result.bytes:,} bytes)")
            if step % t.checkpoint_every == 0 and not done():
                save()

    if step != saved_step:
        save()
    if interrupted:
        writer.close()
        return RunSummary(run_dir, step, True, tuple(losses), None, None, 0, None, last_ckpt)

    progress.message(f"trained {step} steps in {elapsed / 60:.1f} minutes; evaluating on {corpus.source} validation")
    result = evaluate(model, val_docs, context=context, batch_size=t.batch_size)
    xz = xz_bits_per_byte(corpus.validation_bytes)
    _log(metrics_path, {"step": step, "val_bpb": result.bpb, "val_bytes": result.bytes, "xz_bpb": xz, "final": True})
    writer.add_scalar("val/bpb", result.bpb, step)
    writer.close()
    sample = None
    if t.sample_bytes:
        from aunet.core.generate import generate

        sample = generate(model, [t.prompt.encode()], t.sample_bytes, temperature=0.7, top_k=40, seed=t.seed)[0]
    return RunSummary(run_dir, step, False, tuple(losses), result.bpb, xz, result.bytes, sample, last_ckpt)


def _comparable(spec: Spec) -> Any:
    """A spec without its stamp and budget, for comparing what a run was started with."""
    return attrs.evolve(resolve_spec(spec), stamp={}, train=attrs.evolve(spec.train, steps=None, minutes=None))


def load_run_model(path: str | Path):
    """(spec, model) of a checkpoint (a checkpoint folder or a run directory's latest)."""
    from aunet.core.model import build_model

    ckpt = checkpoint.resolve(path)
    weights, _, meta = checkpoint.load(ckpt)
    if not isinstance(meta.get("spec"), str):
        raise checkpoint.CheckpointError(f"checkpoint {ckpt} records no spec in its meta.json")
    spec = parse_spec(meta["spec"], source=f"{ckpt}/meta.json")
    model = build_model(spec)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise checkpoint.CheckpointError(f"checkpoint {ckpt} does not match its spec: "
                                         f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    model.eval()
    return spec, model, ckpt


def default_out(spec: Spec) -> Path:
    return Path("runs") / f"{spec.name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


__all__ = ["RunSummary", "TrainingDiverged", "apply_overrides", "default_out", "load_run_model", "train"]
