"""Write ``bible_cloze.jsonl``: a local multiple-choice task from the embedded corpus's validation
books (which no default run trains on), for ``aunet harness`` on a machine without internet.

Each item is a verse cut after about 60% of its words: the context is its start, the choices are
its own ending and the endings of three other verses of the validation split (of similar length,
drawn with a fixed seed), in a shuffled order. Chance is 25%. Run from the checkout's root:

    python examples/harness/make_bible_cloze.py      # writes examples/harness/bible_cloze.jsonl
    aunet harness --ckpt RUN --tasks bible_cloze --include-path examples/harness --out runs/harness

The World English Bible is in the public domain (corpora/README.md).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from aunet.jobs.data.corpus import load_corpus

ITEMS = 200
SEED = 0


def verses() -> list[str]:
    lines = []
    for doc in load_corpus(None).validation:
        for line in doc.data.decode("utf-8").splitlines():
            words = line.split()
            if len(words) >= 10 and not line[:1].isdigit() and " " in line:  # a verse, not a heading
                lines.append(line.strip())
    return lines


def cut(line: str) -> tuple[str, str]:
    words = line.split(" ")
    at = round(len(words) * 0.6)
    return " ".join(words[:at]), " " + " ".join(words[at:])


def main(out: Path | None = None) -> None:
    rng = random.Random(SEED)
    pool = verses()
    chosen = rng.sample(range(len(pool)), ITEMS)
    endings = [cut(line)[1] for line in pool]
    records = []
    for i in chosen:
        context, gold = cut(pool[i])
        near = [j for j in range(len(pool)) if j != i and abs(len(endings[j]) - len(gold)) <= max(8, len(gold) // 4)]
        choices = [gold] + [endings[j] for j in rng.sample(near, 3)]
        rng.shuffle(choices)
        records.append({"context": context, "choices": choices, "gold": choices.index(gold)})
    out = out or Path(__file__).with_name("bible_cloze.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} items to {out}")


if __name__ == "__main__":
    main()
