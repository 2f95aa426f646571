"""Writing aunet's own lm-eval suites (``character``, ``robustness``): each task a JSON-lines file
of multiple-choice items (``context``, ``choices``, ``gold``) and its YAML, the suite a group."""

from __future__ import annotations

import json
from pathlib import Path

#: Accuracy, lm-eval's own metric of a multiple-choice task.
ACCURACY = "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"


def task_yaml(task: str, *, module: str, metrics: str = ACCURACY, process_results: str | None = None) -> str:
    """The YAML of one multiple-choice task whose items are in ``<task>.jsonl`` beside it."""
    return (
        f"# {task}: aunet's {module} suite (aunet.integrations.lm_eval.{module}); data in {task}.jsonl\n"
        f"task: {task}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    test: {task}.jsonl\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        'target_delimiter: ""\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: gold\n"
        + (f"process_results: !function {process_results}\n" if process_results else "")
        + f"metric_list:\n{metrics}"
    )


def write_suite(
    folder: Path, items: dict[str, list[dict]], *, group: str, group_yaml: str, yaml: dict[str, str]
) -> Path:
    """Every task's items and YAML, and the group's YAML (``<group>.yaml``), into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for task, records in items.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        (folder / f"{task}.jsonl").write_text(lines, encoding="utf-8")
        (folder / f"{task}.yaml").write_text(yaml[task], encoding="utf-8")
    (folder / f"{group}.yaml").write_text(group_yaml, encoding="utf-8")
    return folder
