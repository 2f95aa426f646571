"""A robustness suite: the same cloze items with the prompt clean and perturbed, scored by accuracy
and by the bits per byte of the right continuation, for ``aunet harness``.

The items are verses of the embedded corpus's validation books (which no run trains on), cut
after about 60% of their words: the prompt is the start, the right choice the verse's own ending,
the others the endings of three verses of similar length (a fixed seed). Every variant keeps the
items and changes one thing:

* ``robust_clean``: the prompt ends at a word boundary, each choice starts with its space;
* ``robust_space``: the prompt ends with the space (the prompt-boundary problem: a BPE model's
  tokens usually carry the space on the word after it);
* ``robust_midword``: the prompt ends inside the next word (its first half), the choices carry
  the rest of that word, then the verse's or another verse's ending: a BPE model sees a token cut
  where its training never cut one;
* ``robust_typo``: one word in four of the prompt (at least one) with two adjacent letters swapped;
* ``robust_upper``: the prompt in capitals;
* ``robust_ascii``: typographic quotes, apostrophes and dashes of the prompt folded to ASCII. NFC
  and NFD leave this English text as it is (it holds no combining characters), so this is the
  normalisation that changes it.

Continuations are never perturbed, so a variant's bits per byte (``bits_per_byte``: the right
choice's log-likelihood over its bytes, summed over the items) compares with the clean one's on the
same bytes, except ``robust_space`` (the space moves into the prompt) and ``robust_midword`` (the
word's first half does): there the continuation is a suffix of the clean one, whose first bytes
are the hardest to predict, so compare models with each other rather than with the clean line.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from aunet.integrations.lm_eval.local_tasks import ACCURACY, task_yaml, write_suite

GROUP = "robust"
VARIANTS = ("clean", "space", "midword", "typo", "upper", "ascii")
TASKS = tuple(f"{GROUP}_{v}" for v in VARIANTS)
ITEMS = 200
SEED = 0
#: Typographic characters and their ASCII forms (``robust_ascii``).
ASCII_FOLDS = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2014": "-", "\u2013": "-"}


def verses(documents: list[bytes]) -> list[list[str]]:
    """The words of every verse of ``documents`` with ten words or more, the last word before the
    cut at least four letters long (so that ``robust_midword`` has a word to cut)."""
    out = []
    for doc in documents:
        for line in doc.decode("utf-8").splitlines():
            words = line.strip().split(" ")
            if len(words) >= 10 and not line[:1].isdigit() and len(words[_cut(words)]) >= 4:
                out.append(words)
    return out


def _cut(words: list[str]) -> int:
    return round(len(words) * 0.6)


def _typos(text: str, rng: random.Random) -> str:
    """One word in four of four letters or more (at least one) with two adjacent letters swapped."""
    words = text.split(" ")
    eligible = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha() and len(set(w)) > 1]
    chosen = [i for i in eligible if rng.random() < 0.25] or eligible[:1]
    for i in chosen:
        word = words[i]
        j = rng.choice([k for k in range(len(word) - 1) if word[k] != word[k + 1]])
        words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


def _fold(text: str) -> str:
    return "".join(ASCII_FOLDS.get(ch, ch) for ch in text)


def build(pool: list[list[str]], *, items: int = ITEMS, seed: int = SEED) -> dict[str, list[dict]]:
    """Every variant's items: the same verses, prompts and distractors in each."""
    rng = random.Random(seed)
    endings = [" ".join(words[_cut(words) :]) for words in pool]
    chosen = rng.sample(range(len(pool)), items)
    out: dict[str, list[dict]] = {task: [] for task in TASKS}
    for i in chosen:
        words = pool[i]
        at = _cut(words)
        start, gold = " ".join(words[:at]), endings[i]
        near = [j for j in range(len(pool)) if j != i and abs(len(endings[j]) - len(gold)) <= max(8, len(gold) // 4)]
        others = [endings[j] for j in rng.sample(near, 3)]
        order = [gold, *others]
        rng.shuffle(order)
        index = order.index(gold)
        head = words[at][: len(words[at]) // 2]  # the first half of the word after the cut
        rest = words[at][len(head) :]
        typo = _typos(start, random.Random(f"{seed}:{i}"))
        variants: dict[str, tuple[str, list[str]]] = {
            "clean": (start, [" " + e for e in order]),
            "space": (start + " ", list(order)),
            "midword": (start + " " + head, [rest + " " + " ".join(e.split(" ")[1:]) for e in order]),
            "typo": (typo, [" " + e for e in order]),
            "upper": (start.upper(), [" " + e for e in order]),
            "ascii": (_fold(start), [" " + e for e in order]),
        }
        for variant, (context, choices) in variants.items():
            out[f"{GROUP}_{variant}"].append({"context": context, "choices": choices, "gold": index})
    return out


def process_results(doc: dict, results: list[Any]) -> dict[str, Any]:
    """lm-eval's per-item metrics: ``acc`` (the right choice the most likely) and, for
    ``bits_per_byte``, the right choice's log-likelihood and its bytes."""
    lls = [float(r[0]) for r in results]
    gold = int(doc["gold"])
    best = max(range(len(lls)), key=lambda k: lls[k])
    return {"acc": float(best == gold), "bits_per_byte": (lls[gold], len(doc["choices"][gold].encode("utf-8")))}


#: Accuracy and the right ending's bits per byte (its log-likelihood over its bytes, summed).
METRICS = ACCURACY + "  - metric: bits_per_byte\n    aggregation: bits_per_byte\n    higher_is_better: false\n"


def _group_yaml() -> str:
    listed = "".join(f"  - {t}\n" for t in TASKS)
    return f"# The robustness suite: every variant of aunet.integrations.lm_eval.robustness\ngroup: {GROUP}\ntask:\n{listed}"


def write_tasks(folder: Path, documents: list[bytes] | None = None, *, items: int = ITEMS, seed: int = SEED) -> Path:
    """Write the suite into ``folder``: ``robust_<variant>.jsonl`` and ``.yaml`` per variant, the
    group ``robust.yaml`` and ``robust_utils.py`` (the per-item metrics, from this module).
    ``documents`` default to the embedded corpus's validation split."""
    if documents is None:
        from aunet.jobs.data.corpus import load_corpus

        documents = [doc.data for doc in load_corpus(None).validation]
    suite = build(verses(documents), items=items, seed=seed)
    yaml = {
        task: task_yaml(task, module="robustness", metrics=METRICS, process_results="robust_utils.process_results")
        for task in suite
    }
    write_suite(folder, suite, group=GROUP, group_yaml=_group_yaml(), yaml=yaml)
    (folder / "robust_utils.py").write_text(
        '"""Per-item metrics of aunet\'s robustness suite."""\n\n'
        "from aunet.integrations.lm_eval.robustness import process_results\n\n"
        '__all__ = ["process_results"]\n',
        encoding="utf-8",
    )
    return folder


def wanted(tasks: list[str]) -> bool:
    """Whether ``tasks`` names the suite or one of its variants."""
    return any(t == GROUP or t in TASKS for t in tasks)
