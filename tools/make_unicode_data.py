"""Generate ``core/_unicode_data.py``: the Unicode character properties the splitters read.

The splitters must give the same levels on every machine and every Python version, because a
trained model's checkpoints depend on them. So the character data is generated once from a pinned
version of the Unicode Character Database and committed, instead of being read from
``unicodedata`` at run time (whose version changes with the interpreter).

Properties, each run-length encoded (uint32 run starts, uint8 values, zlib, base64):
    General_Category      UnicodeData.txt
    Script                Scripts.txt
    Grapheme_Cluster_Break auxiliary/GraphemeBreakProperty.txt
    Extended_Pictographic emoji/emoji-data.txt
    Indic linker          IndicSyllabicCategory.txt (Virama, Invisible_Stacker): joins consonants
    Syllable-final mark   IndicSyllabicCategory.txt (Bindu, Visarga, Tone_Mark, killers, ...):
                          marks after which a syllable's cluster is complete in practice

Usage: ``python tools/make_unicode_data.py UCD_DIR`` where UCD_DIR holds the files above, e.g.
``/usr/share/unicode`` from Debian's ``unicode-data`` package (15.0.0 in Debian 12). Writes
``core/_unicode_data.py`` next to this tool.
"""

from __future__ import annotations

import base64
import re
import sys
import zlib
from pathlib import Path

import numpy as np

N = 0x110000
CATEGORIES = [
    "Lu",
    "Ll",
    "Lt",
    "Lm",
    "Lo",
    "Mn",
    "Mc",
    "Me",
    "Nd",
    "Nl",
    "No",
    "Pc",
    "Pd",
    "Ps",
    "Pe",
    "Pi",
    "Pf",
    "Po",
    "Sm",
    "Sc",
    "Sk",
    "So",
    "Zs",
    "Zl",
    "Zp",
    "Cc",
    "Cf",
    "Cs",
    "Co",
    "Cn",
]
SYLLABLE_FINAL = {
    "Bindu",
    "Visarga",
    "Tone_Mark",
    "Tone_Letter",
    "Pure_Killer",
    "Consonant_Killer",
    "Syllable_Modifier",
    "Cantillation_Mark",
    "Register_Shifter",
    "Gemination_Mark",
}
GRAPHEME_BREAK = [
    "Other",
    "CR",
    "LF",
    "Control",
    "Extend",
    "ZWJ",
    "Regional_Indicator",
    "Prepend",
    "SpacingMark",
    "L",
    "V",
    "T",
    "LV",
    "LVT",
]


def ranges(path: Path):
    """(first, last, value) for each data line of a UCD property file."""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cps, value = (field.strip() for field in line.split(";")[:2])
        first, _, last = cps.partition("..")
        yield int(first, 16), int(last or first, 16), value


def general_category(ucd: Path) -> np.ndarray:
    table = np.full(N, CATEGORIES.index("Cn"), dtype=np.uint8)
    start = None
    for line in (ucd / "UnicodeData.txt").read_text(encoding="utf-8").splitlines():
        fields = line.split(";")
        cp, name, cat = int(fields[0], 16), fields[1], fields[2]
        if name.endswith(", First>"):
            start = cp
            continue
        table[(start if name.endswith(", Last>") else cp) : cp + 1] = CATEGORIES.index(cat)
        start = None
    return table


def enumerated(path: Path, names: list[str], default: str) -> tuple[np.ndarray, list[str]]:
    names = list(names)
    if default not in names:
        names.insert(0, default)
    table = np.full(N, names.index(default), dtype=np.uint8)
    for first, last, value in ranges(path):
        if value not in names:
            names.append(value)
        table[first : last + 1] = names.index(value)
    return table, names


def flag(path: Path, wanted: set[str]) -> np.ndarray:
    table = np.zeros(N, dtype=np.uint8)
    for first, last, value in ranges(path):
        if value in wanted:
            table[first : last + 1] = 1
    return table


def encode(table: np.ndarray) -> tuple[str, int]:
    change = np.flatnonzero(np.diff(table.astype(np.int16))) + 1
    starts = np.concatenate([[0], change]).astype(np.uint32)
    blob = zlib.compress(starts.tobytes() + table[starts].tobytes(), 9)
    return base64.b64encode(blob).decode("ascii"), len(starts)


def literal(text: str) -> str:
    lines = [text[i : i + 96] for i in range(0, len(text), 96)]
    return "(\n" + "".join(f'    "{line}"\n' for line in lines) + ")"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ucd = Path(sys.argv[1])
    readme = (ucd / "ReadMe.txt").read_text(encoding="utf-8") if (ucd / "ReadMe.txt").exists() else ""
    version = re.search(r"Version (\d+\.\d+\.\d+)", readme)
    version = version.group(1) if version else re.search(r"(\d+\.\d+\.\d+)", str(ucd.resolve())).group(1)
    scripts, script_names = enumerated(ucd / "Scripts.txt", [], "Unknown")
    gcb, gcb_names = enumerated(ucd / "auxiliary" / "GraphemeBreakProperty.txt", GRAPHEME_BREAK, "Other")
    tables = {
        "GENERAL_CATEGORY": general_category(ucd),
        "SCRIPT": scripts,
        "GRAPHEME_BREAK": gcb,
        "EXTENDED_PICTOGRAPHIC": flag(ucd / "emoji" / "emoji-data.txt", {"Extended_Pictographic"}),
        "LINKER": flag(ucd / "IndicSyllabicCategory.txt", {"Virama", "Invisible_Stacker"}),
        "SYLLABLE_FINAL": flag(ucd / "IndicSyllabicCategory.txt", SYLLABLE_FINAL),
    }
    out = [
        '"""Generated by tools/make_unicode_data.py from the Unicode Character Database: do not edit.',
        "",
        f"Unicode {version}. Each property is run-length encoded: uint32 run starts, then uint8 values",
        "(indices into the name tuple for enumerated properties), zlib-compressed, base64.",
        "Unicode data: Copyright Unicode, Inc., Unicode License v3 (https://www.unicode.org/license.txt).",
        '"""',
        "",
        f'UNICODE_VERSION = "{version}"',
        f"CATEGORIES = {tuple(CATEGORIES)!r}",
        f"SCRIPTS = {tuple(script_names)!r}",
        f"GRAPHEME_BREAKS = {tuple(gcb_names)!r}",
    ]
    for name, table in tables.items():
        text, runs = encode(table)
        out += ["", f"{name}_RUNS = {runs}", f"{name} = {literal(text)}"]
    target = Path(__file__).resolve().parent.parent / "core" / "_unicode_data.py"
    target.write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote {target}: Unicode {version}, {len(script_names)} scripts", file=sys.stderr)


if __name__ == "__main__":
    main()
