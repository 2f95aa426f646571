"""The character classes of the script-aware splitters (``aunet.splitters.script``, whose
docstring states the rules): every code point's class from its Unicode properties (general
category, script, grapheme break, syllabic category), and the rules' constants, shared by the
streaming machine (``script``) and the vectorized form (``script_batch``)."""

from __future__ import annotations

import functools

import numpy as np

from aunet.core.text import (
    CATEGORIES,
    GRAPHEME_BREAKS,
    INVALID,
    NEWLINES,
    SCRIPTS,
    TABLE_SIZE,
    WHITE_SPACE,
    CharTable,
    extended_pictographic,
    general_category,
    grapheme_break,
    linker,
    script,
    syllable_final,
)

# Character classes. The first eight are cluster bases; the rest join clusters (or start odd ones).
(
    LETTER,
    LETTER_M,
    CJK,
    SEA,
    SEA_END,
    DIGIT,
    SYMBOL,
    SPACE,
    NEWLINE,
    MARK,
    FINAL,
    LINKER,
    ZWJ,
    PREPEND,
    RI,
    JAMO_L,
    JAMO_VT,
) = range(17)
CLASS_NAMES = (
    "letter",
    "letter-with-marks",
    "cjk",
    "sea",
    "sea-final-vowel",
    "digit",
    "symbol",
    "space",
    "newline",
    "mark",
    "final-mark",
    "linker",
    "zwj",
    "prepend",
    "regional-indicator",
    "jamo-l",
    "jamo-vt",
)
START = 17  # "previous cluster" before the first character
LETTERS = (LETTER, LETTER_M, CJK, SEA, SEA_END)
# Letter groups for script changes: spaced scripts, Southeast Asian scripts, CJK.
GROUP = {LETTER: 1, LETTER_M: 1, SEA: 2, SEA_END: 2, CJK: 3}

#: Space-delimited scripts whose words carry many combining marks (the cap prefers cutting at them).
MARKED_SCRIPTS = frozenset(
    [
        "Devanagari",
        "Bengali",
        "Gurmukhi",
        "Gujarati",
        "Oriya",
        "Tamil",
        "Telugu",
        "Kannada",
        "Malayalam",
        "Sinhala",
        "Arabic",
        "Hebrew",
        "Syriac",
        "Thaana",
        "Nko",
        "Mongolian",
        "Limbu",
        "Lepcha",
        "Chakma",
        "Meetei_Mayek",
        "Saurashtra",
        "Syloti_Nagri",
        "Sundanese",
        "Batak",
        "Cham",
        "Kayah_Li",
        "Rejang",
        "Tagalog",
        "Hanunoo",
        "Buhid",
        "Tagbanwa",
        "Brahmi",
        "Kharoshthi",
        "Grantha",
        "Sharada",
        "Takri",
        "Tirhuta",
        "Modi",
        "Khojki",
        "Khudawadi",
        "Mahajani",
        "Kaithi",
        "Siddham",
        "Dogra",
        "Newa",
        "Bhaiksuki",
        "Marchen",
        "Masaram_Gondi",
        "Gunjala_Gondi",
        "Nandinagari",
        "Ahom",
        "Adlam",
        "Hanifi_Rohingya",
        "Mandaic",
        "Samaritan",
        "Tai_Viet",
    ]
)
#: Scripts written without spaces between words, whose units come from rule 4.
SEA_SCRIPTS = frozenset(
    ["Thai", "Lao", "Khmer", "Myanmar", "Tai_Tham", "New_Tai_Lue", "Tai_Le", "Balinese", "Javanese", "Buginese"]
)
#: Scripts whose every character is a unit.
CJK_SCRIPTS = frozenset(["Han", "Hiragana", "Katakana", "Bopomofo", "Yi", "Nushu", "Tangut", "Khitan_Small_Script"])
#: Letters that belong with CJK although their script is Common: ー (and its halfwidth form), 〆.
CJK_EXTRA = (0x30FC, 0xFF70, 0x3006)
#: Thai and Lao vowels written after the consonant as separate letters: a syllable's cluster is over.
SEA_FINAL_VOWELS = (0x0E30, 0x0E32, 0x0E33, 0x0E45, 0x0EB0, 0x0EB2, 0x0EB3)
#: Characters that separate words or syllables like a space: Tibetan tsheg, Ethiopic wordspace.
SEPARATORS = (0x0F0B, 0x0F0C, 0x1361)


#: Rule 4 thresholds, relative to ``unit_bytes``: a syllable-final mark or following vowel from
#: +0, a combining mark from +SEA_MARK, any cluster start from +SEA_ANY.
SEA_MARK, SEA_ANY = 1, 3
#: Rule 5 thresholds, relative to ``max_bytes``: syllable-final mark, combining mark, any character,
#: any character of a cluster whose script writes many marks (letter-with-marks, Southeast Asian).
CAP_FINAL, CAP_MARK, CAP_ANY, CAP_ANY_MARKED = 10, 6, 3, 7
#: Rule 5 threshold of a combining mark in scripts that write many marks (relative to max_bytes).
CAP_MARK_MARKED = 10
#: Rule 5 in spaced scripts: letter clusters are counted up to this many bytes wide.
MAX_LETTER = 4


@functools.cache
def script_classes() -> CharTable:
    """The class of every code point under the script rules."""
    gc_first = np.array([name[0] for name in CATEGORIES] + ["?"])[general_category()]
    scripts = np.array(list(SCRIPTS) + [""] * (256 - len(SCRIPTS)))[script()]
    gcb = np.array(list(GRAPHEME_BREAKS) + [""] * (256 - len(GRAPHEME_BREAKS)))[grapheme_break()]
    table = np.full(TABLE_SIZE, SYMBOL, dtype=np.uint8)
    table[gc_first == "N"] = DIGIT
    letters = gc_first == "L"
    table[letters] = LETTER
    table[letters & np.isin(scripts, list(MARKED_SCRIPTS))] = LETTER_M
    table[letters & np.isin(scripts, list(SEA_SCRIPTS))] = SEA
    table[letters & np.isin(scripts, list(CJK_SCRIPTS))] = CJK
    table[list(CJK_EXTRA)] = CJK
    # Emoji and other pictographic symbols are words here, not punctuation: "I ❤ you" has three
    # units, and a ZWJ sequence or a flag is never cut into symbol pieces.
    symbols = np.isin(np.array(list(CATEGORIES) + ["?"])[general_category()], ["So", "Sk"])
    table[(extended_pictographic() == 1) & symbols] = LETTER
    table[list(SEA_FINAL_VOWELS)] = SEA_END
    marks = (gcb == "Extend") | (gcb == "SpacingMark")
    table[marks] = MARK
    table[marks & (syllable_final() == 1)] = FINAL
    table[gcb == "ZWJ"] = ZWJ
    table[gcb == "Prepend"] = PREPEND
    table[gcb == "Regional_Indicator"] = RI
    table[gcb == "L"] = JAMO_L
    table[(gcb == "V") | (gcb == "T")] = JAMO_VT
    table[linker() == 1] = LINKER
    table[list(WHITE_SPACE) + list(SEPARATORS)] = SPACE
    table[list(NEWLINES)] = NEWLINE
    table[INVALID] = SYMBOL
    return CharTable("script", table, CLASS_NAMES)


#: The class a cluster takes from a first character that is no base (a mark, a joiner, a
#: prepended character, a jamo or a regional indicator): rules 2 to 5 see clusters by it.
CLUSTER_BASE = {
    MARK: SYMBOL,
    FINAL: SYMBOL,
    LINKER: SYMBOL,
    ZWJ: SYMBOL,
    RI: LETTER,
    PREPEND: LETTER,
    JAMO_L: LETTER,
    JAMO_VT: LETTER,
}
