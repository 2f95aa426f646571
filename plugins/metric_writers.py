"""Built-in metric writers (the contract: ``aunet.core.writers``).

* ``jsonl``: ``metrics.jsonl``, one JSON object per logging event (the rows of the trainer, with
  their lists per level and flags); always written. A resumed run drops the rows after its
  checkpoint's step (and a final evaluation's row, and a torn last line).
* ``tensorboard``: TensorBoard event files under ``tb/`` (``[train.metrics] tensorboard = true``,
  the default, is a shorthand for it). A resumed run purges from the step after its checkpoint:
  TensorBoard's readers hide what earlier files logged from there on.
* ``mlflow``: an MLflow run in MLflow's file store under ``mlruns/`` of the run directory (view it
  with ``mlflow ui --backend-store-uri <run>/mlruns``). The MLflow run's id is kept in
  ``mlflow-run.json``; a resumed run reopens that MLflow run and drops its values after the
  checkpoint's step. Needs ``pip install 'aunet[mlflow]'`` (``mlflow-skinny``).
* ``wandb``: a Weights & Biases run in offline mode under ``wandb/`` (upload it later with
  ``wandb sync <run>/wandb/offline-run-*``). The run's id is kept in ``wandb-run.json``; a resumed
  run continues it with W&B's rewind (``resume_from = "<id>?_step=<checkpoint's step>"``), which
  drops what an earlier invocation logged after the checkpoint. Needs ``pip install 'aunet[wandb]'``.

Every writer imports its library when it opens, never at import: listing plugins or reading a
spec does not import TensorBoard, MLflow or W&B.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from aunet.core.errors import InputError
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar
from aunet.core.writers import MetricRun, MetricWriter, MetricWriterSpec

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"
MLFLOW_DIR = "mlruns"
MLFLOW_RUN_FILE = "mlflow-run.json"
WANDB_DIR = "wandb"
WANDB_RUN_FILE = "wandb-run.json"


def _replace_text(path: Path, text: str) -> None:
    """Write a small file so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_id(path: Path) -> dict[str, Any] | None:
    """The record a writer kept of its run's id, or None (absent, or not readable as one)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _non_empty(_: Any, attribute: Any, value: str) -> None:
    if not value.strip():
        raise ValueError("must not be empty")


# -- jsonl ---------------------------------------------------------------------------------------


def truncate_rows(path: Path, step: int) -> int:
    """Drop the rows of a ``metrics.jsonl`` that a resumed run writes again (steps after
    ``step``, a final evaluation, a torn last line); returns how many were dropped."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            keep = isinstance(row, dict) and int(row.get("step", step + 1)) <= step and not row.get("final")
        except (ValueError, TypeError):
            keep = False  # a torn line
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        _replace_text(path, "".join(line + "\n" for line in kept))
    return dropped


class JsonlWriter(MetricWriter):
    """Appends each row to ``metrics.jsonl`` (opened and closed per row: a row is on disk once
    written, and a killed run tears at most its last line)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        pass  # the row of the same event carries these figures

    def write_row(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        pass


@attrs.frozen(kw_only=True)
class JsonlSpec(MetricWriterSpec):
    """metrics.jsonl: one JSON row per logging event (always written)."""

    kind: ClassVar[str] = "jsonl"

    def open(self, run: MetricRun) -> MetricWriter:
        path = run.directory / METRICS_FILE
        if run.resume_step is not None:
            truncate_rows(path, run.resume_step)
        return JsonlWriter(path)

    def read(self, directory: Path) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        path = directory / METRICS_FILE
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for line in lines:
            row = json.loads(line)
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.setdefault(name, []).append((int(row["step"]), float(value)))
        return out


# -- TensorBoard ---------------------------------------------------------------------------------


class TensorBoardWriter(MetricWriter):
    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@attrs.frozen(kw_only=True)
class TensorBoardSpec(MetricWriterSpec):
    """TensorBoard event files under tb/ (on by default: train.metrics.tensorboard)."""

    kind: ClassVar[str] = "tensorboard"
    requires: ClassVar[tuple[str, ...]] = ("tensorboard",)

    def unavailable(self) -> str | None:
        if super().unavailable() is None:
            return None
        return "the 'tensorboard' writer needs tensorboard: pip install tensorboard, or set tensorboard = false"

    def open(self, run: MetricRun) -> MetricWriter:
        from torch.utils.tensorboard import SummaryWriter

        tb = run.directory / TENSORBOARD_DIR
        if tb.exists() and not tb.is_dir():
            raise InputError(
                f"{tb} is a file; TensorBoard writes a folder there: remove it, or set "
                "train.metrics.tensorboard = false"
            )
        # A resumed run's first step: TensorBoard hides what earlier event files logged from
        # there on (the steps this run does again).
        purge = run.resume_step + 1 if run.resume_step is not None else None
        return TensorBoardWriter(SummaryWriter(str(tb), purge_step=purge))

    def read(self, directory: Path) -> dict[str, list[tuple[int, float]]]:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(directory / TENSORBOARD_DIR), size_guidance={"scalars": 0})
        quiet = logging.getLogger("tensorboard")  # its note on the purge is what a resume asks for
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            events.Reload()
        finally:
            quiet.setLevel(level)
        return {
            tag: [(event.step, float(event.value)) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]
        }


# -- MLflow --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_store_allowed() -> Iterator[None]:
    """MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set (it is in
    maintenance mode, not removed): allowed while a client for this run's own store is made (the
    client keeps the store it made)."""
    name = "MLFLOW_ALLOW_FILE_STORE"
    before = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def mlflow_client(directory: Path) -> Any:
    """An MLflow client of the run directory's own file store (``mlruns/``)."""
    from mlflow.tracking import MlflowClient

    with _file_store_allowed():
        return MlflowClient(tracking_uri=(directory.resolve() / MLFLOW_DIR).as_uri())


#: Characters MLflow allows in a parameter's name.
_PARAM_NAME = re.compile(r"[^A-Za-z0-9_\-. :/]")


def _params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec's tables flattened to MLflow parameters (``train.lr``, ``levels.1.stage.kind``)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = _PARAM_NAME.sub("_", f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(_params(value, name + "."))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                out.update(_params(item, f"{name}.{i}."))
        else:
            out[name[:250]] = json.dumps(value) if not isinstance(value, str) else value
    return {k: v[:6000] for k, v in out.items()}


class MlflowWriter(MetricWriter):
    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(
            self.run_id, metrics=[Metric(name, float(value), now, step) for name, value in metrics.items()]
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.set_terminated(self.run_id)
            self._client = None


@attrs.frozen(kw_only=True)
class MlflowSpec(MetricWriterSpec):
    """MLflow, in the file store under mlruns/ of the run directory (aunet[mlflow])."""

    kind: ClassVar[str] = "mlflow"
    requires: ClassVar[tuple[str, ...]] = ("mlflow",)
    extra: ClassVar[str | None] = "mlflow"
    experiment: str = attrs.field(default="aunet", validator=_non_empty)
    """The MLflow experiment that holds the run (created if need be)."""

    def open(self, run: MetricRun) -> MetricWriter:
        client = mlflow_client(run.directory)
        record = _read_id(run.directory / MLFLOW_RUN_FILE) if run.resumed else None
        run_id = record.get("run_id") if record else None
        if run_id is not None and self._exists(client, run_id):
            self._truncate(run.directory, record.get("experiment_id"), run_id, run.resume_step or 0)
            client.update_run(run_id, status="RUNNING")
            return MlflowWriter(client, run_id)
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
        created = client.create_run(experiment_id, run_name=run.name or None)
        run_id = created.info.run_id
        params = list(_params(run.config).items())
        if params:
            from mlflow.entities import Param

            for i in range(0, len(params), 100):  # MLflow takes 100 parameters per batch
                client.log_batch(run_id, params=[Param(k, v) for k, v in params[i : i + 100]])
        _replace_text(
            run.directory / MLFLOW_RUN_FILE, json.dumps({"experiment_id": experiment_id, "run_id": run_id}) + "\n"
        )
        return MlflowWriter(client, run_id)

    @staticmethod
    def _exists(client: Any, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            client.get_run(run_id)
        except MlflowException:
            return False
        return True

    @staticmethod
    def _truncate(directory: Path, experiment_id: Any, run_id: str, step: int) -> None:
        """Drop the values an earlier invocation logged after ``step``: MLflow has no call that
        deletes a metric's values, so they go from the file store's own files (one per metric,
        ``timestamp value step`` per line, what ``get_metric_history`` reads)."""
        metrics = directory / MLFLOW_DIR / str(experiment_id) / run_id / "metrics"
        for path in sorted(p for p in metrics.rglob("*") if p.is_file()) if metrics.is_dir() else []:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            kept = [line for line in lines if _mlflow_step(line) is not None and _mlflow_step(line) <= step]
            if not kept:
                path.unlink()  # a metric with no value left is no metric (MLflow rejects an empty file)
            elif len(kept) != len(lines):
                _replace_text(path, "".join(line + "\n" for line in kept))

    def read(self, directory: Path) -> dict[str, list[tuple[int, float]]]:
        record = _read_id(directory / MLFLOW_RUN_FILE)
        if record is None:
            return {}
        client = mlflow_client(directory)
        names = client.get_run(record["run_id"]).data.metrics
        return {name: [(m.step, m.value) for m in client.get_metric_history(record["run_id"], name)] for name in names}


def _mlflow_step(line: str) -> int | None:
    parts = line.split()
    try:
        return int(parts[2]) if len(parts) >= 3 else None
    except ValueError:
        return None  # a torn line


# -- Weights & Biases ----------------------------------------------------------------------------


class WandbWriter(MetricWriter):
    def __init__(self, run: Any) -> None:
        self._run = run

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


@attrs.frozen(kw_only=True)
class WandbSpec(MetricWriterSpec):
    """Weights & Biases, offline, under wandb/ of the run directory (aunet[wandb])."""

    kind: ClassVar[str] = "wandb"
    requires: ClassVar[tuple[str, ...]] = ("wandb",)
    extra: ClassVar[str | None] = "wandb"
    project: str = attrs.field(default="aunet", validator=_non_empty)
    """The W&B project the run is synced to."""
    entity: str | None = None
    """The W&B entity (user or team) it is synced to; none: the default of the account."""
    tags: tuple[str, ...] = ()
    """Tags of the run."""
    system_metrics: bool = True
    """Also record the machine's CPU, memory and GPU use (W&B's system metrics)."""

    def open(self, run: MetricRun) -> MetricWriter:
        import wandb

        record = _read_id(run.directory / WANDB_RUN_FILE) if run.resumed else None
        run_id = record.get("id") if record else None
        settings = wandb.Settings(
            console="off",  # the trainer's progress line stays the trainer's
            silent=True,
            x_disable_stats=not self.system_metrics,
            disable_git=True,
            save_code=False,
            disable_job_creation=True,
        )
        common = {
            "mode": "offline",
            "dir": str(run.directory),
            "project": self.project,
            "entity": self.entity,
            "name": run.name or None,
            "tags": list(self.tags) or None,
            "settings": settings,
        }
        if run_id is not None:
            # W&B's rewind: the run goes on from the checkpoint's step; what an earlier invocation
            # logged after it is dropped (offline: when the runs are synced, in order).
            started = wandb.init(resume_from=f"{run_id}?_step={run.resume_step}", **common)
        else:
            started = wandb.init(config=dict(run.config), **common)
            _replace_text(run.directory / WANDB_RUN_FILE, json.dumps({"id": started.id}) + "\n")
        return WandbWriter(started)

    def read(self, directory: Path) -> dict[str, list[tuple[int, float]]]:
        """Every offline run of the directory in the order they started, read with W&B's own
        reader of its transaction logs (``wandb leet inspect --json``), a later run's rewind
        applied."""
        logs = []
        for path in (directory / WANDB_DIR).glob("offline-run-*/run-*.wandb"):
            result = subprocess.run(
                [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
            started = next((r["run"].get("start_time", "") for r in records if r.get("type") == "run"), "")
            when, _, fraction = started.rstrip("Z").partition(".")  # UTC, to the second, as text
            logs.append((when, fraction.ljust(9, "0"), str(path), records))
        out: dict[str, list[tuple[int, float]]] = {}
        for *_, records in sorted(logs):
            for record in records:
                if record.get("type") == "run" and "branch_point" in record["run"]:
                    rewind = record["run"]["branch_point"].get("value", 0)
                    out = {name: [(s, v) for s, v in pairs if s <= rewind] for name, pairs in out.items()}
                elif record.get("type") == "history":
                    item = record["history"]["item"]
                    for name, value in item.items():
                        if not name.startswith("_") and isinstance(value, (int, float)):
                            out.setdefault(name, []).append((int(item["_step"]), float(value)))
        return {name: pairs for name, pairs in out.items() if pairs}


@hookimpl
def aunet_register_metric_writers(registry: Registrar) -> None:
    for cls in (JsonlSpec, TensorBoardSpec, MlflowSpec, WandbSpec):
        registry.add_metric_writer(cls)
