"""Evaluation suites: the Universal Declaration of Human Rights in 525 language variants, and the
validation texts of the multilingual mix by group.

The texts are parallel (the same content in every language), so they compare how a splitter cuts,
and how a model predicts, across scripts: ``aunet split --suite udhr`` (bytes per segment per
level, the share of level-1 segments over 16 bytes, the share of boundaries inside a grapheme
cluster) and ``aunet eval --suite udhr`` (bits per byte per language). 8 to 43 KB each: a
comparison set, not training data.

``multilingual`` is the final validation split of ``embedded:multilingual``
(``aunet.jobs.data.corpus``): the English validation books as one text (group ``english``)
and the last 20% of every UDHR language of the mix, grouped ``seen``, ``low`` or ``held-out``;
``aunet eval --suite multilingual`` adds bits per byte per group.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import attrs
import numpy as np

from aunet.core.errors import InputError
from aunet.core.levels import SplitterStack, segment_stats
from aunet.jobs.data.udhr import SuiteText, udhr_texts

SUITES = ("udhr", "multilingual")
LONG_BYTES = 16  # the number of upsampling offsets: longer level-1 segments wrap around


def suite_names() -> tuple[str, ...]:
    """The suites ``suite_texts`` knows (what ``--suite`` accepts)."""
    return SUITES


@functools.cache
def multilingual_texts() -> tuple[SuiteText, ...]:
    """The multilingual suite (module docstring), English first, then by group and file."""
    from aunet.jobs.data.corpus import language_of, multilingual_corpus

    corpus = multilingual_corpus()
    index = {t.file.removesuffix(".txt"): t for t in udhr_texts()}
    english = b"".join(d.data for d in corpus.validation if language_of(d.name) is None)
    out = [SuiteText("en_web-validation", "en", "English (Bible, validation books)", english, "english")]
    for doc in corpus.validation:
        found = language_of(doc.name)
        if found is not None:
            group, stem = found
            out.append(SuiteText(stem, index[stem].tag, index[stem].name, doc.data, group))
    return tuple(out)


def suite_texts(name: str, only: str | None = None) -> tuple[SuiteText, ...]:
    """The texts of a suite; ``only`` keeps those named (comma-separated file stems such as
    ``eng,cmn_hans``, or BCP 47 tags)."""
    if name not in suite_names():
        raise InputError(f"--suite: unknown suite '{name}'; known: {', '.join(suite_names())}")
    texts = udhr_texts() if name == "udhr" else multilingual_texts()
    if only is None:
        return texts
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    by_tag: dict[str, SuiteText] = {}
    for t in texts:
        by_tag.setdefault(t.tag, t)  # a tag names its first text (zh: cmn_hans)
    by_name = by_tag | {t.file.removesuffix(".txt"): t for t in texts}
    unknown = [w for w in wanted if w not in by_name]
    if unknown or not wanted:
        from aunet.core.errors import did_you_mean

        bad = unknown[0] if unknown else only
        raise InputError(
            f"--only: no {name} text is named '{bad}'; give file stems or BCP 47 tags such as eng, "
            f"cmn_hans, tha{did_you_mean(bad, by_name)}"
        )
    return tuple(dict.fromkeys(by_name[w] for w in wanted))


@attrs.frozen
class SplitStats:
    """How a stack cut one text."""

    text: SuiteText
    bytes_per_segment: tuple[float, ...]  # per level 1..L
    long_share: float  # level-1 segments over 16 bytes that are not a single cluster
    inside_share: float  # level-1 boundaries that fall inside a grapheme cluster

    def to_json(self) -> dict:
        return {
            "file": self.text.file,
            "bcp47": self.text.tag,
            "name": self.text.name,
            "n_bytes": len(self.text.data),
            "bytes_per_segment": [round(x, 4) for x in self.bytes_per_segment],
            "long_share": round(self.long_share, 5),
            "inside_share": round(self.inside_share, 5),
        }


def split_stats(stack: SplitterStack, text: SuiteText) -> SplitStats:
    """Bytes per segment per level, long level-1 segments, boundaries inside clusters."""
    from aunet.core.text import decode

    levels = stack.levels(text.data)
    per_level = segment_stats(levels, stack.depth).bytes_per_segment
    if stack.depth == 0:
        return SplitStats(text, (), 0.0, 0.0)
    chars = decode(text.data)
    starts = _cluster_starts(text.data)  # (M,)
    cluster = np.cumsum(starts) - 1
    cum = np.cumsum(chars.nbytes.astype(np.int64))
    ends = np.flatnonzero(levels[chars.ends] >= 1)  # character index of each level-1 boundary
    if len(ends) == 0:
        return SplitStats(text, per_level, 0.0, 0.0)
    first = np.concatenate([[0], ends[:-1] + 1])
    size = cum[ends] - np.concatenate([[0], cum[ends[:-1]]])
    long = (size > LONG_BYTES) & (cluster[ends] != cluster[first])
    following = ends + 1
    inside = (following < len(starts)) & ~starts[np.minimum(following, len(starts) - 1)]
    return SplitStats(text, per_level, float(long.mean()), float(inside.mean()))


@functools.lru_cache(maxsize=1024)
def _cluster_starts(data: bytes) -> np.ndarray:
    """(M,) bool: where each grapheme cluster of ``data`` starts. The UAX #29 oracle is plain
    Python and the same for every stack, so a suite's texts pay for it once per process."""
    from aunet.core.text import decode
    from aunet.splitters.graphemes import cluster_starts

    return np.array(cluster_starts(decode(data).cp.tolist()), dtype=bool)


def split_suite(stack: SplitterStack, texts: Sequence[SuiteText]) -> list[SplitStats]:
    return [split_stats(stack, t) for t in texts]
