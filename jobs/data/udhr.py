"""The Universal Declaration of Human Rights in 525 language variants, as shipped
(``corpora/udhr.tar.xz``): read here, in the data room, for the multilingual training mix
(``aunet.jobs.data.corpus``) and the evaluation suites (``aunet.jobs.inference.suites``)."""

from __future__ import annotations

import csv
import functools
import io
import tarfile

import attrs


@attrs.frozen
class SuiteText:
    """One text of a suite."""

    file: str
    tag: str  # BCP 47
    name: str
    data: bytes
    group: str = ""  # multilingual: english, seen, low or held-out


@functools.cache
def udhr_texts() -> tuple[SuiteText, ...]:
    """The 525 UDHR texts, in file order."""
    from aunet.core.resources import CORPORA

    path = CORPORA / "udhr.tar.xz"
    with tarfile.open(path, "r:xz") as archive:
        files = {m.name.split("/", 1)[1]: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}
    index = {row["file"]: row for row in csv.DictReader(io.StringIO(files["index.tsv"].decode()), delimiter="\t")}
    out = []
    for name in sorted(files):
        if not name.endswith(".txt"):
            continue
        row = index.get(name, {})
        out.append(SuiteText(name, row.get("bcp47", ""), row.get("name", name), files[name]))
    return tuple(out)
