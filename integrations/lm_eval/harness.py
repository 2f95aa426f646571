"""Running lm-evaluation-harness tasks on a checkpoint: finding the tasks (names, globs, YAML
files, local folders given as ``include_path``), running them with ``AUNetLM``, and writing
lm-eval's results and samples files as its own ``run`` command does (``run_harness``,
``evaluate_tasks``); the metrics as rows and a table (``metric_rows``, ``format_table``).

lm_eval is imported only inside the functions: this module imports without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from aunet.core.errors import AunetError, InputError, did_you_mean
from aunet.integrations.lm_eval import character, robustness
from aunet.integrations.lm_eval.model import _require_lm_eval, make_lm


@attrs.frozen
class Harnessed:
    """What one ``run_harness`` produced, and where lm-eval's files went."""

    results: dict[str, Any]
    results_file: Path
    samples_files: dict[str, Path]


def run_harness(
    ckpt: str | Path,
    tasks: list[str],
    *,
    out: Path,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 8,
    device: Any = "cpu",
) -> dict:
    """Evaluate a checkpoint on lm-eval tasks (names, glob patterns or YAML files; local YAML tasks
    from ``include_path``) and write ``results_<date>.json`` and ``samples_<task>_<date>.jsonl``
    under ``out/<checkpoint>/``, as ``lm-eval run --output_path out --log_samples`` does; returns
    lm-eval's results dict (as written, without the samples)."""
    return evaluate_tasks(
        ckpt,
        tasks,
        out=out,
        include_path=include_path,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        device=device,
    ).results


def evaluate_tasks(
    ckpt: str | Path,
    tasks: list[str],
    *,
    out: Path,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 8,
    device: Any = "cpu",
    decode_threads: int | str | None = "auto",
) -> Harnessed:
    """``run_harness``, telling also where the files went."""
    _require_lm_eval()
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.utils import sanitize_model_name

    names = [tasks] if isinstance(tasks, str) else list(tasks)
    tasks = [t.strip() for name in names for t in name.split(",") if t.strip()]  # "a,b" as lm-eval reads it
    if not tasks:
        raise InputError("--tasks: give at least one lm-eval task name")
    from aunet.jobs.runs.directory import check_out

    check_out(Path(out), what="lm-eval's results")
    lm = make_lm(ckpt=ckpt, batch_size=batch_size, device=device, decode_threads=decode_threads)  # fails fast
    paths = [include_path] if include_path is not None else []
    if character.wanted(tasks):  # aunet's own suites: written beside the results
        paths.append(character.write_tasks(Path(out) / "char-tasks"))
    if robustness.wanted(tasks):
        paths.append(robustness.write_tasks(Path(out) / "robust-tasks"))
    manager = _task_manager(tasks, paths)
    tracker = EvaluationTracker(output_path=str(out))
    try:
        with _no_download_ping(), _data_files_beside_their_yaml():
            # No model_args: lm-eval only records them for a model object, and warns of a "chat
            # variant" when they contain "inst" or "chat" (a path may); get_model_info records
            # the checkpoint instead.
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=tasks,
                num_fewshot=num_fewshot,
                limit=limit,
                batch_size=batch_size,
                device=str(lm.device),
                task_manager=manager,
                log_samples=True,
                evaluation_tracker=tracker,
            )
    except ConnectionError as exc:  # a task's dataset is on the Hub, which this machine cannot reach
        raise InputError(
            f"{exc}: the task's data must be downloaded from the Hugging Face Hub (or be in its "
            "cache, with HF_DATASETS_OFFLINE=1)"
        ) from None
    except AunetError:
        raise
    except Exception as exc:
        if _raised_in_aunet(exc):
            raise  # aunet's own code was running: a bug, with its traceback
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise InputError(
            f"lm-eval could not run {', '.join(tasks)}: {type(exc).__name__}: {detail} (a malformed task: "
            "its YAML, templates or data; or a flag it cannot meet, such as a --num-fewshot above its "
            "examples)"
        ) from None
    # lm-eval names the folder after a `pretrained=`/`model=` argument, else a random name; here
    # the run's own folder name names it (with the checkpoint when one was named): never a path.
    name = results_name(lm.run.checkpoint) if lm.run is not None else "aunet"
    tracker.general_config_tracker.model_name = str(ckpt)
    tracker.general_config_tracker.model_name_sanitized = sanitize_model_name(name)
    samples = results.pop("samples")
    # As lm-eval's own `run` command saves them (lm_eval/_cli/run.py).
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    folder = Path(out) / tracker.general_config_tracker.model_name_sanitized
    results_file = folder / f"results_{tracker.date_id}.json"
    if not results_file.is_file():  # lm-eval logs a failed write and goes on: not here
        raise InputError(f"lm-eval could not write its results under {folder} (see its log above)")
    samples_files = {t: folder / f"samples_{t}_{tracker.date_id}.jsonl" for t in results["configs"]}
    return Harnessed(results, results_file, samples_files)


def results_name(checkpoint: Path) -> str:
    """The folder lm-eval's files go to under ``--out``: the run directory's name, and the
    checkpoint's when it is not the run's newest (``--ckpt ../x`` gives ``x``, never ``..__x``)."""
    import re

    from aunet.jobs.runs.checkpoint import CHECKPOINTS, latest_name

    checkpoint = checkpoint.resolve()
    if checkpoint.parent.name == CHECKPOINTS:
        run = checkpoint.parent.parent
        name = run.name if latest_name(run) == checkpoint.name else f"{run.name}-{checkpoint.name}"
    else:
        name = checkpoint.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "aunet"


def _raised_in_aunet(exc: BaseException) -> bool:
    """Whether aunet's own code was running when ``exc`` was raised (past ``evaluate_tasks``)."""
    modules = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name not in _PASS_THROUGH:  # aunet's wrappers around lm-eval's loading
            modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return any(m == "aunet" or m.startswith("aunet.") for m in modules[1:])


_PASS_THROUGH = ("load_yaml", "_beside")


@contextlib.contextmanager
def _data_files_beside_their_yaml() -> Iterator[None]:
    """Local tasks whose ``dataset_kwargs.data_files`` name paths relative to their YAML file.

    lm-eval reads such paths relative to the directory it runs in, so a task folder works from
    one directory only. Here a relative path that does not exist there is read relative to the
    task's YAML file instead (lm-eval's own reading comes first: no task changes meaning), so
    ``examples/harness`` runs from anywhere. Where lm-eval's task loader has another shape (a
    version aunet was not tested with), tasks are read as lm-eval reads them."""
    try:
        from lm_eval.tasks import _factory
    except ImportError:
        yield
        return
    original = getattr(_factory, "load_yaml", None)
    if original is None:
        yield
        return

    def load_yaml(path: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = original(path, *args, **kwargs)
        files = (cfg.get("dataset_kwargs") or {}).get("data_files") if isinstance(cfg, dict) else None
        if files is not None and isinstance(cfg.get("dataset_kwargs"), dict):
            cfg["dataset_kwargs"]["data_files"] = _beside(files, Path(path).expanduser().resolve().parent)
        return cfg

    _factory.load_yaml = load_yaml
    try:
        yield
    finally:
        _factory.load_yaml = original


def _beside(files: Any, folder: Path) -> Any:
    if isinstance(files, str):
        return (
            str(folder / files)
            if not Path(files).is_absolute() and not Path(files).exists() and (folder / files).exists()
            else files
        )
    if isinstance(files, list):
        return [_beside(f, folder) for f in files]
    if isinstance(files, dict):
        return {k: _beside(v, folder) for k, v in files.items()}
    return files


def _yaml_problems(include_path: Path) -> list[str]:
    """The YAML files of a task folder that lm-eval's index skips because they do not parse."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        return []
    paths = [include_path] if include_path.is_file() else sorted(include_path.rglob("*.yaml"))
    problems = []
    for path in paths:
        try:
            load_yaml(path, resolve_func=False, recursive=False)
        except Exception as exc:  # noqa: BLE001 - yaml's errors, and lm-eval's own
            where = str(exc).strip().replace("\n", " ")
            problems.append(f"{path}: not a readable lm-eval task ({type(exc).__name__}: {where[:300]})")
    return problems


def _task_manager(tasks: list[str], include_paths: list[str | Path]) -> Any:
    """lm-eval's TaskManager for ``tasks``, or an InputError naming those it does not know.

    Indexing lm-eval's own tasks (some 15,000) takes about ten seconds; tasks that are all plain
    tasks (not groups or tags, which may name built-in tasks) of ``include_path`` are loaded from
    an index of that folder alone, which gives the same tasks (the folder's take precedence)."""
    from lm_eval.tasks import TaskManager

    missing = [t for t in tasks if t.endswith((".yaml", ".yml")) and not Path(t).is_file()]
    if missing:
        raise InputError(f"--tasks: '{missing[0]}' does not exist (a task named by its YAML file)")
    folders = []
    for include_path in include_paths:
        if not Path(include_path).exists():
            raise InputError(f"--include-path: '{include_path}' does not exist")
        # lm-eval indexes folders: a file's own folder holds it
        folders.append(str(Path(include_path).parent if Path(include_path).is_file() else include_path))
    if folders:
        local = TaskManager(include_path=folders, include_defaults=False)
        if all(t in local.all_subtasks for t in tasks):
            return local
        problems = [p for folder in folders for p in _yaml_problems(Path(folder))]
        if problems:  # lm-eval's index skips a file it cannot parse: say so, not "unknown task"
            raise InputError("\n".join([f"--include-path: {p}" for p in problems]))
    manager = TaskManager(include_path=folders or None)
    unknown = [t for t in tasks if not (t.endswith(".yaml") and Path(t).is_file()) and not manager.match_tasks([t])]
    if unknown:
        hint = did_you_mean(unknown[0], manager.all_tasks) if len(unknown) == 1 else ""
        raise InputError(
            f"unknown lm-eval task{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}{hint} "
            "(`lm-eval ls tasks` lists the known ones; for local YAML tasks give "
            "--include-path DIR)"
        )
    return manager


@contextlib.contextmanager
def _no_download_ping() -> Iterator[None]:
    """The run without ``datasets``' download-count ping.

    A local task (``dataset_path: json`` with local ``data_files``) loads without any network,
    but for one thing: ``datasets`` sends a HEAD request to s3.amazonaws.com each time it loads a
    packaged builder such as ``json`` (a download count; 3 s timeout, failures ignored), which on
    a machine without a network only waits. It is turned off for the run, and only it:
    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are not set, since tasks whose data is on the Hub need
    the Hub (where it cannot be reached, ``datasets`` says so after its retries: an InputError)."""
    import datasets.config

    before = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = before


def metric_rows(results: dict) -> list[tuple[str, str, float, float | None]]:
    """(task, metric, value, stderr) of every metric in lm-eval's results, tasks and groups."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            name = metric if filt in ("", "none") else f"{metric} ({filt})"
            rows.append((task, name, float(value), float(stderr) if isinstance(stderr, (int, float)) else None))
    return rows


def format_table(results: dict) -> str:
    """The metrics as a small aligned table."""
    rows = [("task", "metric", "value", "stderr")]
    rows += [(t, m, f"{v:.4f}", "" if s is None else f"{s:.4f}") for t, m, v, s in metric_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}".rstrip() for r in rows
    )
