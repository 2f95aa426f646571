"""``embedded:multilingual``: English from the embedded Bible with UDHR languages mixed in, some
seen well, some seen little and some never, for measuring what a model carries from one language
to another.

The UDHR texts (``corpora/udhr.tar.xz``) are parallel, so every language is measured on the same
articles. Each text is cut at line breaks into fractions of its bytes:

* **seen** languages (27, eleven scripts) train on their first 80% (``final`` split; 60% with the
  ``tuning`` split);
* **low-resource** languages (8) train on their first 8% only, about one article: a language met
  briefly, as low-resource languages are in a real crawl;
* **held-out** languages (10) are never trained on: relatives of seen languages (Galician,
  Catalan, Slovak, Bokmål, Afrikaans, Croatian, traditional Chinese) and languages alone in their
  script or family (Basque, Georgian, Welsh).

Every language validates on the same stretch of its text: the last 20% (``final``), or 60-80%
(``tuning``, which trains seen languages on the first 60% only). The English part is split by books
as the ``en_web`` corpus is, and one training book in eight is kept (9 books, 0.68 MB), so that the
UDHR languages are about a third of the training bytes (with every book they would be 7%, and a
small model spends its whole budget on English: at 3e12 FLOPs an AU-Net met 5 KB of Russian and
gave it 19 bits per byte). Validation documents are named ``udhr <group> <file>`` so that ``aunet
eval --suite multilingual`` reports bits per byte by group and language; the English validation
books, all of them, keep their names.
"""

from __future__ import annotations

import hashlib

from aunet.jobs.data.corpus import (
    EMBEDDED,
    EMBEDDED_PREFIX,
    Corpus,
    Document,
    Split,
    embedded_documents,
    line_cut,
    split,
)

NAME = "multilingual"
SEEN = [
    "fra",
    "spa",
    "ita",
    "nld",
    "swe",
    "pol",
    "ces",
    "rus",
    "bul",
    "tur",
    "fin",
    "hun",
    "arb",
    "heb",
    "hin",
    "ben",
    "tam",
    "tha",
    "vie",
    "ind",
    "swh",
    "yor",
    "cmn_hans",
    "jpn",
    "kor",
    "hye",
    "amh",
]
LOW = ["dan", "ukr", "urd", "mar", "est", "lit", "tgl", "zul"]
HELD_OUT = ["glg", "cat", "slk", "nob", "afr", "hrv", "cmn_hant", "eus", "kat", "cym"]
GROUPS = {"seen": SEEN, "low": LOW, "held-out": HELD_OUT}
LOW_FRACTION = 0.08
ENGLISH_EVERY = 8  # one training book in eight


def _trained_fraction(group: str, which: Split) -> float:
    if group == "seen":
        return 0.6 if which is Split.TUNING else 0.8
    return LOW_FRACTION if group == "low" else 0.0


def language_of(document: str) -> tuple[str, str] | None:
    """(group, file stem) of a multilingual validation document's name, None for an English book."""
    parts = document.split(" ")
    if len(parts) == 3 and parts[0] == "udhr" and parts[1] in GROUPS:
        return parts[1], parts[2]
    return None


def multilingual_corpus(which: Split = Split.FINAL) -> Corpus:
    """The mix (module docstring), split."""
    from aunet.jobs.inference.suites import udhr_texts

    english = split(embedded_documents(), EMBEDDED_PREFIX + EMBEDDED, which)
    texts = {t.file.removesuffix(".txt"): t.data for t in udhr_texts()}
    missing = [stem for stems in GROUPS.values() for stem in stems if stem not in texts]
    assert not missing, f"the embedded UDHR archive lacks {missing}"
    start, end = (0.6, 0.8) if which is Split.TUNING else (0.8, 1.0)
    train, validation = list(english.train[::ENGLISH_EVERY]), list(english.validation)
    for group, stems in GROUPS.items():
        for stem in stems:
            data = texts[stem]
            trained = line_cut(data, _trained_fraction(group, which)) if _trained_fraction(group, which) else 0
            if trained:
                train.append(Document(f"udhr {stem}", data[:trained]))
            validation.append(Document(f"udhr {group} {stem}", data[line_cut(data, start) : line_cut(data, end)]))
    fingerprint = {"embedded": NAME, "sha256": _fingerprint()}
    return Corpus(
        EMBEDDED_PREFIX + NAME,
        tuple(train),
        tuple(d for d in validation if d.data),
        path=EMBEDDED_PREFIX + NAME,
        fingerprint=fingerprint,
    )


def _fingerprint() -> str:
    """SHA-256 over the two archives the mix is made of, and the mix's own definition."""
    from aunet.core.resources import CORPORA

    digest = hashlib.sha256()
    for file in (f"{EMBEDDED}.txt.xz", "udhr.tar.xz"):
        digest.update((CORPORA / file).read_bytes())
    digest.update(repr((GROUPS, LOW_FRACTION, ENGLISH_EVERY)).encode())
    return digest.hexdigest()
