"""The character-level suite (``aunet.integrations.lm_eval.character``): every item's right answer
is right (recomputed from its context), its near misses are of the same form and distinct, the
answers are spread over the choices, the suite is the same on every build, and ``aunet harness
--tasks char`` runs all of it through lm-eval with standard errors."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

from aunet.core.resources import read_corpus
from aunet.integrations.lm_eval import character as c


@pytest.fixture(scope="module")
def suite() -> dict[str, list[dict]]:
    return c.build(c.vocabulary(read_corpus("en_web").decode("utf-8")))


def quoted(context: str) -> list[str]:
    return re.findall(r'"([^"]*)"', context)


def ordinal(context: str) -> list[int]:
    return [c.ORDINALS.index(w) for w in re.findall(r"\b(" + "|".join(c.ORDINALS) + r")\b", context)]


def right_answer(task: str, context: str) -> str | None:
    """The answer recomputed from the context alone (None: a task whose answer is not in it)."""
    q = quoted(context)
    if task == "char_spell":
        return " " + " ".join(q[0])
    if task == "char_unspell":
        return " " + q[0].replace(" ", "")
    if task == "char_contains":
        return " yes" if q[1] in q[0] else " no"
    if task == "char_count":
        return f" {q[1].count(q[0])}"
    if task == "char_insert":
        (k,) = ordinal(context)
        return " " + q[1][: k + 1] + q[0] + q[1][k + 1 :]
    if task == "char_delete":
        (k,) = ordinal(context)
        return " " + q[0][:k] + q[0][k + 1 :]
    if task == "char_substitute":
        return " " + q[1].replace(q[0], q[2])
    if task == "char_swap":
        i, j = ordinal(context)
        letters = list(q[0])
        letters[i], letters[j] = letters[j], letters[i]
        return " " + "".join(letters)
    return None


def test_every_task_has_its_items_and_every_answer_is_right(suite) -> None:
    assert list(suite) == list(c.TASKS)
    for task, items in suite.items():
        assert len(items) == (c.ITEMS if task != "char_sem" else len(items)) and len(items) >= 60, (task, len(items))
        for item in items:
            choices, gold = item["choices"], item["gold"]
            assert len(set(choices)) == len(choices) and 0 <= gold < len(choices), item
            expected = right_answer(task, item["context"])
            if expected is not None:
                assert choices[gold] == expected, (task, item)


def test_near_misses_look_like_the_answer(suite) -> None:
    # A model must not be able to reject a choice by its form alone.
    for task in ("char_spell", "char_unspell", "char_insert", "char_delete", "char_substitute", "char_swap"):
        for item in suite[task]:
            gold = len(item["choices"][item["gold"]].replace(" ", ""))
            assert all(abs(len(x.replace(" ", "")) - gold) <= 1 for x in item["choices"]), (task, item)
            assert all(x.startswith(" ") and x.strip() == x[1:] for x in item["choices"]), (task, item)


def test_the_answers_are_spread_over_the_choices(suite) -> None:
    for task, items in suite.items():
        counts = collections.Counter(item["gold"] for item in items)
        share = max(counts.values()) / len(items)
        assert share <= (0.6 if task == "char_contains" else 0.4), (task, counts)


def test_orthographic_and_semantic_neighbours(suite) -> None:
    for item in suite["char_orth"]:
        (word,) = quoted(item["context"])
        distances = [c._edits(word, x.strip()) for x in item["choices"]]
        assert distances[item["gold"]] == 1 and sorted(distances)[1] >= 3, item
    pairs = {frozenset(p) for p in c.SYNONYMS}
    for item in suite["char_sem"]:
        (word,) = quoted(item["context"])
        assert frozenset((word, item["choices"][item["gold"]].strip())) in pairs, item


def test_the_suite_is_the_same_on_every_build(tmp_path: Path) -> None:
    a = c.write_tasks(tmp_path / "a")
    b = c.write_tasks(tmp_path / "b")
    for task in c.TASKS:
        assert (a / f"{task}.jsonl").read_bytes() == (b / f"{task}.jsonl").read_bytes()
        first = json.loads((a / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()[0])
        assert set(first) == {"context", "choices", "gold"}
    assert (a / "char.yaml").is_file()
    assert c.wanted(["char"]) and c.wanted(["x", "char_swap"]) and not c.wanted(["hellaswag"])


def test_the_harness_runs_the_suite_with_standard_errors(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (the 'eval' extra)")
    from aunet.integrations.lm_eval.adapter import evaluate_tasks, metric_rows

    from conftest import train_small_run

    run = train_small_run(tmp_path, context=128, steps=2)
    done = evaluate_tasks(run, ["char"], out=tmp_path / "out", limit=3, batch_size=8, device="cpu")
    rows = {(task, metric): (value, stderr) for task, metric, value, stderr in metric_rows(done.results)}
    for task in c.TASKS:
        value, stderr = rows[(task, "acc")]
        assert 0 <= value <= 1 and stderr is not None, (task, value, stderr)
    assert (tmp_path / "out" / "char-tasks" / "char_swap.jsonl").is_file()
