"""Metric writers as a plugin family: the spec's ``[train.metrics] writers``, the built-ins
(``jsonl``, ``tensorboard``, ``mlflow``, ``wandb``) against their kit and in real runs that resume,
read back with each library's own reader, the kit's mutation proof, and a third-party writer
(the guide's example) registered through the hook.

Nothing is mocked: the MLflow and W&B tests run the libraries (skipped, saying which extra to
install, where they are not installed)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from aunet.core import Family, MetricWriterSpec, Registry
from aunet.core.convert import dump_spec
from aunet.core.errors import InputError, SpecError
from aunet.core.overrides import apply_overrides
from aunet.jobs.config import MetricsSpec, parse_spec
from aunet.jobs.train.loop import train
from aunet.jobs.train.metrics import MetricWriters, writer_specs
from aunet.plugins.metric_writers import JsonlSpec, MlflowSpec, TensorBoardSpec, WandbSpec
from aunet.testing import check_metric_writer

from conftest import ROOT, run_cli, write_spec
from mutants import BrokenWriterSpec

GUIDE = ROOT / "docs" / "guides" / "metric-writers.md"


def _needs(spec: MetricWriterSpec) -> None:
    """Skip, saying what to install, where the writer's library is not installed."""
    reason = spec.unavailable()
    if reason:
        pytest.skip(reason)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _killed_and_resumed(spec, corpus_file: Path, out: Path, overrides: list[str]) -> dict[int, float]:
    """A run of 10 steps killed after step 7 whose last checkpoint is step 4, resumed: steps 5 to
    7 are trained and written twice. Returns metrics.jsonl's loss per step."""
    train(apply_overrides(spec, overrides), data=corpus_file, out=out, steps=10, stop_at=7)
    shutil.rmtree(out / "checkpoints" / "step-00000007")  # killed after step 7: the last checkpoint is 4
    train(None, data=None, out=out, resume=True)
    losses = {r["step"]: r["loss"] for r in _rows(out) if "loss" in r}
    assert sorted(losses) == list(range(1, 11))
    return losses


def _each_step_once(pairs: list[tuple[int, float]], want: dict[int, float]) -> None:
    steps = [step for step, _ in pairs]
    assert steps == sorted(set(steps)) == sorted(want), steps
    for step, value in pairs:
        assert math.isclose(value, want[step], rel_tol=1e-6), (step, value, want[step])


# -- the spec ------------------------------------------------------------------------------------


def test_writers_are_kinds_or_tables_and_dump_only_when_given() -> None:
    spec = parse_spec(
        '[train.metrics]\nwriters = ["mlflow", { kind = "wandb", project = "p", tags = ["a"] }]\n', name="w"
    )
    assert spec.train.metrics.writers == (MlflowSpec(), WandbSpec(project="p", tags=("a",)))
    assert parse_spec(dump_spec(spec)) == spec
    tables = parse_spec('[[train.metrics.writers]]\nkind = "mlflow"\nexperiment = "e"\n')
    assert tables.train.metrics.writers == (MlflowSpec(experiment="e"),)
    # A spec that names no writers dumps as it did before writers existed.
    plain = parse_spec("[train.metrics]\nevery = 5\n")
    assert "writers" not in dump_spec(plain)
    assert "[train.metrics]\nevery = 5\ntensorboard = true\n" in dump_spec(plain)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'writers = ["mlflow", "x"]',
            "train.metrics.writers[1].kind: unknown metric writer 'x'; known: jsonl, mlflow, tensorboard, wandb",
        ),
        ('writers = ["wandb", "wandb"]', "train.metrics.writers: names the 'wandb' writer twice"),
        ('writers = [{ kind = "wandb", projct = "p" }]', "train.metrics.writers[0].projct: unknown key"),
        ("writers = [{ project = 'p' }]", "train.metrics.writers[0].kind: missing; known metric writer kinds"),
        ('writers = [{ kind = "mlflow", experiment = " " }]', "train.metrics.writers[0].experiment: must not be"),
    ],
)
def test_bad_writers_are_reported_with_their_path(text: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(f"[train.metrics]\n{text}\n")
    assert message in str(err.value), str(err.value)


def test_the_tensorboard_key_is_a_shorthand_for_the_writer() -> None:
    def kinds(config: MetricsSpec) -> list[str]:
        return [w.kind for w in writer_specs(config)]

    assert kinds(MetricsSpec()) == ["jsonl", "tensorboard"]
    assert kinds(MetricsSpec(tensorboard=False)) == ["jsonl"]
    assert kinds(MetricsSpec(writers=(MlflowSpec(), TensorBoardSpec()))) == ["jsonl", "mlflow", "tensorboard"]
    assert kinds(MetricsSpec(tensorboard=False, writers=(TensorBoardSpec(),))) == ["jsonl", "tensorboard"]
    assert kinds(MetricsSpec(writers=(JsonlSpec(),))) == ["jsonl", "tensorboard"]  # jsonl is always there, once


def test_a_missing_library_is_one_line_before_any_work(
    corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # Python's own way to make a module unimportable
    result = run_cli(
        "train",
        "--spec",
        str(write_spec(tmp_path)),
        "--data",
        str(corpus_file),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--set",
        'train.metrics.writers=["mlflow"]',
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "aunet: error: train.metrics.writers: the 'mlflow' writer needs the mlflow extra: pip install 'aunet[mlflow]'"
    )
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_writers_failed_write_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").mkdir()  # a folder where the writer appends to a file
    writers = MetricWriters(tmp_path, MetricsSpec(tensorboard=False))
    with writers, pytest.raises(InputError, match=r"^cannot write .*metrics\.jsonl: Is a directory$"):
        writers.write({"step": 1, "loss": 1.0})


def test_importing_aunet_and_listing_plugins_import_no_writer_library() -> None:
    script = (
        "import sys, aunet, aunet.core.convert\n"
        "from aunet.cli.main import main\n"
        "main(['plugins'])\n"
        'aunet.parse_spec(\'[train.metrics]\\nwriters = ["mlflow", "wandb"]\\n\')\n'
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'wandb', 'tensorboard'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "metric_writer:" in lines and any(line.split()[:1] == ["wandb"] for line in lines)
    assert lines[-1] == "[]"


# -- the kit -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [JsonlSpec(), TensorBoardSpec(), MlflowSpec(), WandbSpec()], ids=lambda s: s.kind)
def test_built_in_writers_pass_the_kit(spec: MetricWriterSpec) -> None:
    _needs(spec)
    check_metric_writer(spec)


@pytest.mark.parametrize(
    ("mutant", "invariant"),
    [
        (BrokenWriterSpec(), "a resumed run keeps the steps up to its checkpoint and drops the later ones: "),
        (BrokenWriterSpec(forget=True), "a resumed run keeps the steps up to its checkpoint"),
        (
            BrokenWriterSpec(truncate=True, fragile=True),
            "flush and close are idempotent: a second close raised ValueError",
        ),
    ],
    ids=["appends-again-on-resume", "forgets-before-the-checkpoint", "second-close-fails"],
)
def test_the_kit_rejects_a_broken_writer(mutant: BrokenWriterSpec, invariant: str) -> None:
    with pytest.raises(AssertionError) as err:
        check_metric_writer(mutant)
    message = str(err.value)
    assert message.startswith("metric writer 'broken-writer': ") and invariant in message, message
    check_metric_writer(BrokenWriterSpec(truncate=True))  # the same writer, mended, passes


def test_the_kit_says_which_invocation_a_wrong_value_came_from() -> None:
    with pytest.raises(AssertionError, match=r"reads back step 4 twice"):
        check_metric_writer(BrokenWriterSpec())


# -- real runs, read back with each library's own reader ----------------------------------------


def test_mlflow_reopens_its_run_on_resume_and_holds_each_step_once(
    spec, corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="the mlflow writer needs the mlflow extra: pip install 'aunet[mlflow]'")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    losses = _killed_and_resumed(spec, corpus_file, out, ['train.metrics.writers=["mlflow"]'])
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store is opt-in
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("aunet")
    runs = client.search_runs([experiment.experiment_id])
    run_id = json.loads((out / "mlflow-run.json").read_text())["run_id"]
    assert [r.info.run_id for r in runs] == [run_id]  # the resumed invocation reopened it
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.lr"] == "0.003" and run.data.params["levels.1.splitter.kind"] == "whitespace"
    loss = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")]
    _each_step_once(sorted(loss), losses)
    assert len(loss) == 10  # steps 5 to 7 of the killed invocation are gone
    assert sorted(m.step for m in client.get_metric_history(run_id, "val/bpb")) == [5, 10]
    assert sorted(m.step for m in client.get_metric_history(run_id, "levels/dropped_1")) == list(range(1, 11))
    # TensorBoard (on by default) beside it, read by TensorBoard's own reader: the purge hides the old steps.
    _each_step_once(TensorBoardSpec().read(out)["train/loss"], losses)


def test_wandb_offline_resumes_with_a_rewind_and_holds_each_step_once(spec, corpus_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("wandb", reason="the wandb writer needs the wandb extra: pip install 'aunet[wandb]'")
    out = tmp_path / "run"
    losses = _killed_and_resumed(
        spec,
        corpus_file,
        out,
        ['train.metrics.writers=[{ kind = "wandb", system_metrics = false }]', "train.metrics.tensorboard=false"],
    )
    run_id = json.loads((out / "wandb-run.json").read_text())["id"]
    logs = sorted((out / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))
    assert len(logs) == 2  # one per invocation, the same W&B run
    runs = []
    for log in logs:  # W&B's own reader of its transaction log
        inspect = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)]
        records = [
            json.loads(line) for line in subprocess.run(inspect, capture_output=True, text=True).stdout.splitlines()
        ]
        runs.append(next(r["run"] for r in records if r["type"] == "run"))
        assert any(r["type"] == "exit" and r["exit"].get("exit_code", 0) == 0 for r in records)
    first, resumed = sorted(runs, key=lambda r: r["start_time"])
    assert first["run_id"] == resumed["run_id"] == run_id and first["project"] == "aunet"
    assert first["config"]["update"]["train"]["lr"] == 0.003
    assert resumed["branch_point"] == {"run": run_id, "metric": "_step", "value": 4}
    history = WandbSpec().read(out)
    _each_step_once(history["train/loss"], losses)
    assert [step for step, _ in history["val/bpb"]] == [5, 10]


# -- a third-party writer: the guide's example ---------------------------------------------------


def _guide_plugin(folder: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The guide's example plugin module, from the guide's own text, imported as an installed
    plugin is (in ``sys.modules``: attrs reads its annotations there)."""
    import importlib.util

    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    path = folder / "aunet_csv_writer.py"
    path.write_text(next(b for b in blocks if "aunet_register_metric_writers" in b), encoding="utf-8")
    loader = importlib.util.spec_from_file_location("aunet_csv_writer", path)
    module = importlib.util.module_from_spec(loader)
    monkeypatch.setitem(sys.modules, "aunet_csv_writer", module)
    loader.loader.exec_module(module)
    return module


def test_the_guides_plugin_registers_through_the_hook_and_passes_the_kit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = _guide_plugin(tmp_path, monkeypatch)
    registry = Registry()
    registry.register(plugin, name="csv-writer")
    assert set(registry.kinds(Family.METRIC_WRITER)) == {"csv"}
    check_metric_writer(plugin.CsvSpec())
    full = Registry.default()
    full.register(plugin, name="csv-writer")
    with_csv = parse_spec(
        '[train.metrics]\nwriters = [{ kind = "csv", file = "s.csv" }]\n', registry=full
    ).train.metrics
    assert [w.kind for w in writer_specs(with_csv, full)] == ["jsonl", "tensorboard", "csv"]
    run = tmp_path / "run"
    run.mkdir()
    with MetricWriters(run, with_csv, registry=full) as writers:
        writers.scalars(1, {"train/loss": 2.5, "train/mfu": None})
    assert (run / "s.csv").read_text().splitlines() == ["1,train/loss,2.5"]
