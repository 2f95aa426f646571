"""The script-aware splitters: the word rules where words are spaced, sensible units everywhere
else, clusters, and the properties every splitter must have."""

from __future__ import annotations

import json
import lzma

import numpy as np
import pytest
from hypothesis import given

from aunet.core.levels import SplitterStack
from aunet.jobs.inference.suites import split_suite, udhr_texts
from aunet.splitters.graphemes import cluster_starts, clusters
from aunet.splitters.script import Script, ScriptFour, ScriptPair, ScriptSplitter, script_classes
from aunet.splitters.words import FourWord, Whitespace, WordPair
from aunet.testing import SCRIPT_ALPHABET, any_bytes, assert_levels_consistent, texts

from conftest import DATA, run_cli

STACKS = [
    SplitterStack((Script(),)),
    SplitterStack((Script(), ScriptPair(), ScriptFour())),
    SplitterStack((ScriptPair(),)),
    SplitterStack((Script(max_bytes=9, unit_bytes=2),)),
    SplitterStack((Whitespace(), Script())),  # mixed families
]
IDS = ["script", "script+pair+4", "pair", "script-small", "whitespace+script"]


@pytest.mark.parametrize("stack", STACKS, ids=IDS)
@given(data=any_bytes(alphabet=SCRIPT_ALPHABET))
def test_properties_on_any_bytes(stack: SplitterStack, data: bytes) -> None:
    assert_levels_consistent(stack, data)


@given(data=texts(alphabet=SCRIPT_ALPHABET))
def test_coarser_splitters_mark_a_subset_of_finer_ones(data: bytes) -> None:
    # Levels nest by construction (a level is the highest marking splitter); what makes the
    # hierarchy meaningful is that pairs and groups of units only ever mark unit boundaries, so
    # stacking them adds no level-1 boundary that `script` alone would not make.
    marks = [
        set(np.flatnonzero(SplitterStack((s,)).levels(data) >= 1).tolist())
        for s in (Script(), ScriptPair(), ScriptFour())
    ]
    assert marks[2] <= marks[1] <= marks[0]
    assert set(np.flatnonzero(STACKS[1].levels(data) >= 1).tolist()) == marks[0]


def _vectors() -> list[dict]:
    with lzma.open(DATA / "reference-word-levels.json.xz", "rt", encoding="utf-8") as f:
        return json.load(f)["cases"]


def test_english_levels_are_the_word_rules_but_for_cap_cuts() -> None:
    word = {
        "whitespace": (Whitespace(),),
        "whitespace+word-pair": (Whitespace(), WordPair()),
        "whitespace+word-pair+4-word": (Whitespace(), WordPair(), FourWord()),
    }
    script = {
        "whitespace": (Script(),),
        "whitespace+word-pair": (Script(), ScriptPair()),
        "whitespace+word-pair+4-word": (Script(), ScriptPair(), ScriptFour()),
    }
    real = [c for c in _vectors() if c["kind"] == "real"]
    cuts = 0
    for case in real:
        data = case["text"].encode()
        expected = np.array(case["expected_levels"])
        got = SplitterStack(script[case["hierarchy"]]).levels(data)
        assert np.array_equal(SplitterStack(word[case["hierarchy"]]).levels(data), expected)
        differ = np.flatnonzero(got != expected)
        # Only level-1 cap cuts differ: an extra level-1 boundary where the word rules have none,
        # inside a stretch of more than 12 bytes without one.
        for i in differ:
            assert expected[i] == 0 and got[i] == 1, (case["text"], i)
            before = np.flatnonzero(expected[:i] >= 1)
            start = before[-1] + 1 if len(before) else 0
            assert i - start + 1 >= 13, (case["text"], i)
        cuts += len(differ)
    assert cuts < 0.01 * sum(len(c["text"]) for c in real)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("中文字", ["中文", "字"]),  # CJK units of unit_bytes (4): two characters
        ("日本語のかなカナ", ["日本", "語の", "かな", "カナ"]),
        ("人人生而自由，在尊严", ["人人", "生而", "自由", "，", "在尊", "严"]),  # punctuation starts afresh
        ("𠀀𠀁", ["𠀀", "𠀁"]),  # 4-byte characters reach unit_bytes alone
        ("中文English text", ["中文", "English ", "text"]),  # a new script counts afresh
        ("ภาษาEnglish ok", ["ภา", "ษา", "English ", "ok"]),
        ("the cat", ["the ", "cat"]),
        ("घर का", ["घर ", "का"]),  # vowel signs stay with their letters
        ("भारत का", ["भा", "रत ", "का"]),  # Indic words are cut after a vowel sign from 6 bytes on
        ("अनुच्छेद १", ["अनु", "च्छे", "द ", "१"]),  # never at a virama: the conjunct stays whole
        ("ሰላም፡ክቡር", ["ሰላም፡", "ክቡር"]),  # Ethiopic wordspace separates words
        ("བོད་ཡིག", ["བོད་", "ཡིག"]),  # Tibetan tsheg separates syllables
        ("I 👩\u200d💻 it!", ["I ", "👩\u200d💻 ", "it!"]),  # an emoji (ZWJ sequence) is a word
        ("🇫🇷 🇩🇪🏳\ufe0f", ["🇫🇷 ", "🇩🇪🏳\ufe0f"]),  # flags pair up and stay whole
    ],
)
def test_units(text: str, segments: list[str]) -> None:
    data = text.encode()
    levels = SplitterStack((Script(),)).levels(data)
    cut = np.flatnonzero(levels >= 1).tolist()
    pieces, start = [], 0
    for i in cut:
        pieces.append(data[start : i + 1].decode())
        start = i + 1
    if start < len(data):
        pieces.append(data[start:].decode())
    assert pieces == segments


def test_unit_bytes_one_gives_a_unit_per_cjk_character() -> None:
    levels = SplitterStack((Script(unit_bytes=1),)).levels("中文字".encode())
    assert np.flatnonzero(levels >= 1).tolist() == [2, 5, 8]


def test_thai_units_prefer_ends_of_syllables() -> None:
    from aunet.splitters.graphemes import boundaries_inside_clusters

    data = "ข้าวกินน้ำที่บ้านค่ะ".encode()
    levels = SplitterStack((Script(),)).levels(data)
    ends = [data[: i + 1].decode("utf-8", "replace")[-1] for i in np.flatnonzero(levels >= 1)]
    assert 3 <= len(data) / (len(ends) + 1) <= 9  # units of about two Thai characters
    assert sum(c in "้่าำะ" for c in ends) >= len(ends) // 2  # tone marks and following vowels first
    assert boundaries_inside_clusters(data, levels) <= len(ends) // 2


def test_cap_keeps_level_1_within_16_bytes_for_long_words() -> None:
    data = ("Rechtsschutzversicherungsgesellschaften " * 3).encode()
    levels = SplitterStack((Script(), ScriptPair())).levels(data)
    ends = np.flatnonzero(levels >= 1)
    sizes = np.diff(np.concatenate([[-1], ends]))
    assert sizes.max() <= 16
    # Cap cuts are level 1 only: the pair level counts the three words.
    assert len(np.flatnonzero(levels >= 2)) == 1


def test_a_virama_sequence_is_never_cut_even_under_a_tight_cap() -> None:
    from aunet.core.text import decode, linker

    data = ("प्रस्तावना " * 10 + "ಕರ್ನಾಟಕ್ಕೆ " * 10).encode()
    levels = SplitterStack((Script(max_bytes=8),)).levels(data)
    chars = decode(data)
    marked = levels[chars.ends] >= 1
    assert marked.sum() > 20 + 20  # the cap cuts inside the words, not only at the 20 spaces
    assert not np.any(marked & (linker()[chars.cp] == 1))  # a boundary after a virama splits a conjunct


def test_class_table_and_options() -> None:
    table = script_classes()
    assert table.n_classes == 17
    with pytest.raises(ValueError, match="at least 4"):
        Script(max_bytes=3)
    with pytest.raises(ValueError, match="between 1 and 64"):
        Script(unit_bytes=0)
    assert ScriptSplitter(n=3).granularity == 3 and ScriptPair().granularity == 2


# -- the UDHR suite ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def udhr_script_stats():
    return split_suite(SplitterStack((Script(),)), udhr_texts())


def test_udhr_targets_on_every_language(udhr_script_stats) -> None:
    assert len(udhr_script_stats) == 525
    for s in udhr_script_stats:
        assert 2.5 <= s.bytes_per_segment[0] <= 12, (s.text.file, s.bytes_per_segment)
        assert s.long_share <= 0.01, (s.text.file, s.long_share)
    by_file = {s.text.file: s for s in udhr_script_stats}
    for file in ("cmn_hans.txt", "cmn_hant.txt", "jpn.txt", "tha.txt"):
        assert 2.5 <= by_file[file].bytes_per_segment[0] <= 8, file


def test_udhr_is_what_the_word_rules_get_wrong(udhr_script_stats) -> None:
    word = {s.text.file: s for s in split_suite(SplitterStack((Whitespace(),)), udhr_texts())}
    for file in ("cmn_hans.txt", "jpn.txt", "tha.txt", "amh.txt"):
        assert word[file].bytes_per_segment[0] > 12  # the paper's weakness, measured
    assert word["rus.txt"].long_share > 0.2
    script = {s.text.file: s for s in udhr_script_stats}
    assert script["eng.txt"].bytes_per_segment == pytest.approx(word["eng.txt"].bytes_per_segment, rel=0.01)
    # Boundaries inside grapheme clusters: fewer than the word rules make on average (they cut
    # words at every combining mark), and none in scripts without combining marks.
    mean_inside = np.mean([s.inside_share for s in udhr_script_stats])
    assert mean_inside < np.mean([s.inside_share for s in word.values()])
    for file in ("eng.txt", "rus.txt", "cmn_hans.txt", "jpn.txt", "amh.txt", "kor.txt"):
        assert script[file].inside_share == 0, file


def test_graphemes_match_unicode_test_file() -> None:
    passed = 0
    for line in (DATA / "GraphemeBreakTest.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        tokens = line.split()
        cps = [int(t, 16) for t in tokens if t not in ("÷", "×")]
        expect = [tokens[i - 1] == "÷" for i, t in enumerate(tokens) if t not in ("÷", "×")]
        assert cluster_starts(cps, conjuncts=False) == expect, line
        passed += 1
    assert passed == 602
    assert clusters("क्षत्रिय".encode()) == ["क्ष".encode(), "त्रि".encode(), "य".encode()]


def test_split_suite_cli() -> None:
    result = run_cli("split", "--splitters", "script,script-pair", "--suite", "udhr", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["splitters"] == ["script", "script-pair"] and len(report["languages"]) == 525
    eng = next(x for x in report["languages"] if x["file"] == "eng.txt")
    assert set(eng) >= {"bytes_per_segment", "long_share", "inside_share", "bcp47", "name"}
    assert len(eng["bytes_per_segment"]) == 2
    human = run_cli("split", "--splitters", "script", "--suite", "udhr")
    assert "525 texts" in human.stdout and "Chinese, Mandarin (Simplified)" in human.stdout


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        # ASCII (w = 1): a word of up to 15 letters is whole (16 bytes with its space) ...
        ("abcdefghijklmno x", ["abcdefghijklmno ", "x"]),
        # ... a longer one is cut where no further letter fits.
        ("abcdefghijklmnopqrst x", ["abcdefghijklmnop", "qrst ", "x"]),
        # Russian (w = 2): seven letters (14 bytes) stay whole; 17 - 2 = 15 bytes is the cut point.
        ("правило x", ["правило ", "x"]),
        ("достопримечательность x", ["достопри", "мечатель", "ность ", "x"]),
        # The document's widest letter so far counts: after a 2-byte letter, ASCII cuts at 15 bytes.
        ("é abcdefghijklmnopq", ["é ", "abcdefghijklmno", "pq"]),
    ],
)
def test_spaced_script_cap_cuts_only_where_no_letter_fits(text: str, segments: list[str]) -> None:
    data = text.encode()
    for levels in (SplitterStack([Script()]).levels(data), SplitterStack([Script()]).stream().feed(data)):
        ends = np.flatnonzero(np.asarray(levels) >= 1)
        pieces = [data[a + 1 : b + 1].decode() for a, b in zip(np.concatenate([[-1], ends[:-1]]), ends)]
        tail = data[ends[-1] + 1 :].decode() if len(ends) else text
        assert pieces + ([tail] if tail else []) == segments
