"""A character-level suite in the spirit of CUTE (Edman, Schmid and Fraser 2024): can a model
spell, read a spelling back, find, count, insert, delete, substitute and swap letters, and tell a
word spelled like another from a word meaning the same? A byte-level model sees the letters; a BPE
model sees tokens that hide them. The paper's claim that AU-Net wins on such tasks is tested here.

Every item is multiple choice, scored by log-likelihood of each choice after the context (lm-eval's
``multiple_choice``), so that small models are measured above chance rather than by what they
generate. Choices are the right answer and near misses of the same form (the word with two
letters swapped, one letter changed, the letter inserted elsewhere...), never strings of another
form that a model could reject on sight. Words are the embedded corpus's: lowercase ASCII words of
3 to 10 letters seen at least three times, drawn with a fixed seed, so the suite is the same on
every machine. ``char_sem`` pairs words with a synonym from a short list written for this suite
(``SYNONYMS``): it is the semantic counterpart of ``char_orth``, where a BPE model is expected to do
well and a small byte model poorly.

``write_tasks(folder)`` writes each task's items (``char_<name>.jsonl``) and lm-eval task file
(``char_<name>.yaml``) and the group ``char`` that runs them all; ``aunet harness --tasks char`` (or
any ``char_<name>``) writes them into its output folder and runs them, on any run: byte, BPE or
AU-Net. lm-eval reports each accuracy with its standard error.
"""

from __future__ import annotations

import collections
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from aunet.integrations.lm_eval.local_tasks import task_yaml, write_suite

#: The group name and its tasks, in the order they are reported.
GROUP = "char"
TASKS = (
    "char_spell",
    "char_unspell",
    "char_contains",
    "char_count",
    "char_insert",
    "char_delete",
    "char_substitute",
    "char_swap",
    "char_orth",
    "char_sem",
)
#: Items per task (``char_sem`` has as many as its word pairs give, both directions).
ITEMS = 200
SEED = 0
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: Word pairs of (nearly) the same meaning, both in the embedded corpus's vocabulary; written for
#: this suite.
SYNONYMS = (
    ("said", "spoke"),
    ("king", "ruler"),
    ("big", "great"),
    ("small", "little"),
    ("begin", "start"),
    ("end", "finish"),
    ("gift", "present"),
    ("happy", "glad"),
    ("sad", "sorrowful"),
    ("fear", "dread"),
    ("strong", "mighty"),
    ("rich", "wealthy"),
    ("poor", "needy"),
    ("quick", "swift"),
    ("slow", "sluggish"),
    ("woman", "lady"),
    ("child", "infant"),
    ("road", "way"),
    ("hill", "mountain"),
    ("sea", "ocean"),
    ("stone", "rock"),
    ("house", "home"),
    ("shut", "close"),
    ("wise", "prudent"),
    ("foolish", "unwise"),
    ("anger", "wrath"),
    ("holy", "sacred"),
    ("sin", "iniquity"),
    ("kill", "slay"),
    ("answer", "reply"),
    ("ask", "request"),
    ("look", "behold"),
    ("hurry", "hasten"),
    ("servant", "slave"),
    ("field", "meadow"),
    ("sword", "blade"),
    ("battle", "war"),
    ("bread", "loaf"),
    ("cry", "weep"),
    ("glory", "honor"),
)


class Vocabulary(tuple):
    """The suite's words in order, and the same words as a set (``known``) for lookups."""

    def __new__(cls, words: Sequence[str]) -> Vocabulary:
        self = super().__new__(cls, words)
        self.known = frozenset(self)
        return self


def vocabulary(text: str, *, minimum: int = 3) -> list[str]:
    """Lowercase ASCII words of 3 to 10 letters seen at least ``minimum`` times, sorted."""
    counts = collections.Counter(w.lower() for w in re.findall(r"[A-Za-z]+", text))
    return sorted(w for w, n in counts.items() if 3 <= len(w) <= 10 and n >= minimum)


def _spelled(word: str) -> str:
    return " ".join(word)


def _near_misses(word: str, rng: random.Random, count: int) -> list[str]:
    """``count`` distinct words one slip from ``word``: two adjacent letters swapped, a letter
    changed, dropped or doubled."""
    found: list[str] = []
    for _ in range(200):
        i = rng.randrange(len(word))
        kind = rng.randrange(4)
        if kind == 0 and i + 1 < len(word):
            miss = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif kind == 1:
            miss = word[:i] + rng.choice(LETTERS.replace(word[i], "")) + word[i + 1 :]
        elif kind == 2 and len(word) > 3:
            miss = word[:i] + word[i + 1 :]
        else:
            miss = word[: i + 1] + word[i] + word[i + 1 :]
        if miss != word and miss not in found:
            found.append(miss)
            if len(found) == count:
                break
    return found


def _item(context: str, gold: str, misses: Sequence[str], rng: random.Random) -> dict:
    choices = [gold, *misses]
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "gold": choices.index(gold)}


def _spell(word: str, rng: random.Random, words: Sequence[str]) -> dict | None:
    misses = _near_misses(word, rng, 3)
    return _item(
        f'Spell the word "{word}" letter by letter:', " " + _spelled(word), [" " + _spelled(m) for m in misses], rng
    )


def _unspell(word: str, rng: random.Random, words: Sequence[str]) -> dict | None:
    misses = _near_misses(word, rng, 3)
    return _item(f'The letters "{_spelled(word)}" spell the word', " " + word, [" " + m for m in misses], rng)


def _contains(word: str, rng: random.Random, words: Sequence[str]) -> dict | None:
    inside = rng.random() < 0.5
    pool = sorted(set(word)) if inside else [c for c in LETTERS if c not in word]
    letter = rng.choice(pool)
    gold = " yes" if inside else " no"
    context = f'Does the word "{word}" contain the letter "{letter}"? Answer:'
    return {"context": context, "choices": [" yes", " no"], "gold": [" yes", " no"].index(gold)}


def _count_items(words: Sequence[str], rng: random.Random, items: int) -> list[dict]:
    """Letter counts of 1, 2 and 3 in turn (most words hold each letter once: drawn as they come,
    " 1" would be right four times in five)."""
    order = rng.sample(list(words), len(words))
    used: set[str] = set()
    out = []
    for k in range(items):
        n = k % 3 + 1
        for word in order:
            counts = collections.Counter(word)
            letters = sorted(c for c, m in counts.items() if m == n)
            if word in used or not letters:
                continue
            used.add(word)
            letter = rng.choice(letters)
            context = f'How many times does the letter "{letter}" appear in the word "{word}"? Answer:'
            out.append({"context": context, "choices": [" 1", " 2", " 3", " 4"], "gold": n - 1})
            break
    return out


def _distinct(gold: str, candidates: Sequence[str], rng: random.Random, count: int = 3) -> list[str] | None:
    others = sorted({c for c in candidates if c != gold})
    return rng.sample(others, count) if len(others) >= count else None


def _insert(word: str, rng: random.Random, words: Sequence[str]) -> dict | None:
    letter = rng.choice(LETTERS)
    k = rng.randrange(1, len(word) + 1)  # after the k-th letter
    gold = word[:k] + letter + word[k:]
    misses = _distinct(gold, [word[:j] + letter + word[j:] for j in range(len(word) + 1)], rng)
    if misses is None:
        return None
    context = f'Insert the letter "{letter}" after the {ORDINALS[k - 1]} letter of "{word}":'
    return _item(context, " " + gold, [" " + m for m in misses], rng)


def _delete(word: str, rng: random.Random, words: Sequence[str]) -> dict | None:
    k = rng.randrange(len(word))
    gold = word[:k] + word[k + 1 :]
    misses = _distinct(gold, [word[:j] + word[j + 1 :] for j in range(len(word))], rng)
    if misses is None:
        return None
    return _item(f'Delete the {ORDINALS[k]} letter of "{word}":', " " + gold, [" " + m for m in misses], rng)


def _substitute(word: str, rng: random.Random, words: Sequence[str]) -> dict | None:
    old = rng.choice(sorted(set(word)))
    new = rng.choice([c for c in LETTERS if c not in word])
    gold = word.replace(old, new)
    misses = _distinct(
        gold,
        [word.replace(c, new) for c in set(word)] + [word[:j] + new + word[j + 1 :] for j in range(len(word))],
        rng,
    )
    if misses is None:
        return None
    context = f'Replace every "{old}" in "{word}" with "{new}":'
    return _item(context, " " + gold, [" " + m for m in misses], rng)


def _swap(word: str, rng: random.Random, words: Sequence[str]) -> dict | None:
    i, j = sorted(rng.sample(range(len(word)), 2))

    def swapped(a: int, b: int) -> str:
        letters = list(word)
        letters[a], letters[b] = letters[b], letters[a]
        return "".join(letters)

    gold = swapped(i, j)
    pairs = [(a, b) for a in range(len(word)) for b in range(a + 1, len(word))]
    misses = _distinct(gold, [swapped(a, b) for a, b in pairs] + [word], rng)
    if gold == word or misses is None:
        return None
    context = f'Swap the {ORDINALS[i]} and the {ORDINALS[j]} letters of "{word}":'
    return _item(context, " " + gold, [" " + m for m in misses], rng)


def _edits(a: str, b: str) -> int:
    """Levenshtein distance."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def _one_edit(word: str) -> set[str]:
    """Every string one insertion, deletion or substitution from ``word``."""
    out = {word[:i] + word[i + 1 :] for i in range(len(word))}
    out |= {word[:i] + c + word[i:] for i in range(len(word) + 1) for c in LETTERS}
    out |= {word[:i] + c + word[i + 1 :] for i in range(len(word)) for c in LETTERS}
    return out - {word}


def _far(word: str, words: Sequence[str], rng: random.Random, *, length: int, count: int = 3) -> list[str] | None:
    """``count`` words of about ``length`` letters, three edits or more from ``word``."""
    found: list[str] = []
    for w in rng.sample(list(words), min(len(words), 400)):
        if abs(len(w) - length) <= 1 and w not in found and _edits(w, word) >= 3:
            found.append(w)
            if len(found) == count:
                return found
    return None


def _orth(word: str, rng: random.Random, words: Vocabulary) -> dict | None:
    close = sorted(_one_edit(word) & words.known)
    far = _far(word, words, rng, length=len(word))
    if not close or far is None:
        return None
    context = f'Which word is spelled most like "{word}"? Answer:'
    return _item(context, " " + rng.choice(close), [" " + w for w in far], rng)


def _sem_items(words: Sequence[str], rng: random.Random) -> list[dict]:
    known = set(words)
    items = []
    for a, b in SYNONYMS:
        for word, gold in ((a, b), (b, a)):
            if word not in known or gold not in known:
                continue
            far = _far(word, [w for w in words if w != gold], rng, length=len(gold))
            if far is None:
                continue
            context = f'Which word means most nearly the same as "{word}"? Answer:'
            items.append(_item(context, " " + gold, [" " + w for w in far], rng))
    return items


_MAKERS: dict[str, Callable[[str, random.Random, Vocabulary], dict | None]] = {
    "char_spell": _spell,
    "char_unspell": _unspell,
    "char_contains": _contains,
    "char_insert": _insert,
    "char_delete": _delete,
    "char_substitute": _substitute,
    "char_swap": _swap,
    "char_orth": _orth,
}


def build(words: Sequence[str], *, items: int = ITEMS, seed: int = SEED) -> dict[str, list[dict]]:
    """Every task's items from a vocabulary, the same for the same words, count and seed."""
    words = Vocabulary(words)
    out: dict[str, list[dict]] = {}
    for task in TASKS:
        rng = random.Random(f"{seed}:{task}")
        if task == "char_sem":
            out[task] = _sem_items(words, rng)
            continue
        if task == "char_count":
            out[task] = _count_items(words, rng, items)
            continue
        made: list[dict] = []
        seen: set[str] = set()
        for word in rng.sample(list(words), len(words)):
            if len(made) == items:
                break
            if word in seen:
                continue
            item = _MAKERS[task](word, rng, words)
            if item is not None:
                made.append(item)
                seen.add(word)
        out[task] = made
    return out


def _group_yaml() -> str:
    listed = "".join(f"  - {t}\n" for t in TASKS)
    return (
        "# The character-level suite: every task of aunet.integrations.lm_eval.character\n"
        f"group: {GROUP}\n"
        f"task:\n{listed}"
        "aggregate_metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    weight_by_size: false\n"
    )


def write_tasks(folder: Path, text: str | None = None, *, items: int = ITEMS, seed: int = SEED) -> Path:
    """Write the suite into ``folder`` (created): ``char_<name>.jsonl`` and ``.yaml`` per task, and
    ``char.yaml`` for the group. ``text`` is where the words come from (default: the embedded
    corpus). Returns the folder."""
    if text is None:
        from aunet.core.resources import read_corpus

        text = read_corpus("en_web").decode("utf-8")
    suite = build(vocabulary(text), items=items, seed=seed)
    yaml = {task: task_yaml(task, module="character") for task in suite}
    return write_suite(folder, suite, group=GROUP, group_yaml=_group_yaml(), yaml=yaml)


def wanted(tasks: Sequence[str]) -> bool:
    """Whether ``tasks`` names the suite or one of its tasks."""
    return any(t == GROUP or t in TASKS for t in tasks)
