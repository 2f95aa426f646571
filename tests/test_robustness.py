"""The robustness suite (``aunet.integrations.lm_eval.robustness``): every variant holds the same
items, a perturbation touches the prompt only, the boundary variants put the same text at another
place, the per-item metrics are the right ones, and ``aunet harness --tasks robust`` runs it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aunet.integrations.lm_eval import robustness as r
from aunet.jobs.data.corpus import load_corpus


@pytest.fixture(scope="module")
def suite() -> dict[str, list[dict]]:
    return r.build(r.verses([doc.data for doc in load_corpus(None).validation]))


def test_every_variant_holds_the_same_items(suite) -> None:
    clean = suite["robust_clean"]
    assert len(clean) == r.ITEMS
    for task in r.TASKS:
        items = suite[task]
        assert [i["gold"] for i in items] == [i["gold"] for i in clean], task
        for item, base in zip(items, clean):
            whole = item["context"] + item["choices"][item["gold"]]
            if task in ("robust_space", "robust_midword"):  # the same text, cut elsewhere
                assert whole == base["context"] + base["choices"][base["gold"]], (task, item)
                assert len(item["context"]) > len(base["context"])
            else:  # the prompt perturbed, the choices as they were
                assert item["choices"] == base["choices"], (task, item)


def test_perturbations_change_the_prompt_as_they_say(suite) -> None:
    changed = {task: 0 for task in r.TASKS}
    for task in r.TASKS:
        for item, base in zip(suite[task], suite["robust_clean"]):
            changed[task] += item["context"] != base["context"]
            if task == "robust_upper":
                assert item["context"] == base["context"].upper()
            if task == "robust_ascii":
                assert not set(item["context"]) & set(r.ASCII_FOLDS)
            if task == "robust_typo":
                assert sorted(item["context"]) == sorted(base["context"])  # letters swapped, none lost
    assert changed["robust_clean"] == 0
    assert changed["robust_typo"] > 150 and changed["robust_upper"] == r.ITEMS and changed["robust_ascii"] > 40, changed


def test_the_per_item_metrics() -> None:
    doc = {"choices": [" ab", " cde"], "gold": 1}
    assert r.process_results(doc, [(-1.0, True), (-3.0, False)]) == {"acc": 0.0, "bits_per_byte": (-3.0, 4)}
    assert r.process_results(doc, [(-5.0, False), (-3.0, False)])["acc"] == 1.0


def test_the_harness_runs_the_suite(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (the 'eval' extra)")
    from aunet.integrations.lm_eval.adapter import evaluate_tasks, metric_rows

    from conftest import train_small_run

    run = train_small_run(tmp_path, context=128, steps=2)
    done = evaluate_tasks(run, ["robust"], out=tmp_path / "out", limit=3, batch_size=8, device="cpu")
    rows = {(task, metric): value for task, metric, value, _ in metric_rows(done.results)}
    for task in r.TASKS:
        assert 0 <= rows[(task, "acc")] <= 1
        assert 0 < rows[(task, "bits_per_byte")] < 20 and math.isfinite(rows[(task, "bits_per_byte")])
