"""The documentation site (docs/, mkdocs.yml) holds together: it builds with ``mkdocs build
--strict`` (broken links, anchors and API references fail), the map of the code names paths that
exist, the spec options reference names every key, and the README's links lead to files."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import attrs
import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
MAP = DOCS / "contributing" / "map.md"
SPEC_OPTIONS = DOCS / "reference" / "spec-options.md"

#: What ``mkdocs build`` needs: the ``docs`` extra.
BUILD_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")

#: A backticked name that is a path of the repository: folders and files, with a slash or a known
#: suffix (``core/model.py``, ``jobs/``, ``pyproject.toml``, ``.ci/run``), not module names.
PATH = re.compile(r"^\.?[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)*/?$")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False


def repository_paths(text: str) -> list[str]:
    """Every backticked name of ``text`` that is a repository path."""
    names = re.findall(r"`([^`\n]+)`", text)
    return [
        n for n in names if PATH.match(n) and ("/" in n or n.endswith((".py", ".toml", ".md", ".txt", ".yml", ".xz")))
    ]


def test_every_path_in_the_map_exists() -> None:
    paths = repository_paths(MAP.read_text(encoding="utf-8"))
    assert len(paths) > 40, f"the map names only {len(paths)} paths: is the pattern still right?"
    missing = sorted({p for p in paths if not (ROOT / p).exists()})
    assert not missing, f"{MAP.relative_to(ROOT)} names paths that do not exist (update the map): {missing}"


def test_the_map_answers_the_questions_in_one_hop() -> None:
    text = MAP.read_text(encoding="utf-8")
    for path in (
        "jobs/train/loop.py",
        "jobs/runs/checkpoint.py",
        "jobs/train/resume.py",
        "jobs/data/corpus.py",
        "jobs/data/streaming.py",
        "jobs/data/bpe.py",
        "jobs/inference/evaluate.py",
        "jobs/inference/generate.py",
        "jobs/experiments/",
        "core/registry.py",
        "core/hookspecs.py",
        "core/model.py",
        "cli/",
        "integrations/hf/",
        "integrations/lm_eval/",
        "jobs/runtime/files.py",
        "testing/kits.py",
        "tests/test_layers.py",
    ):
        assert f"`{path}`" in text, f"the map does not name `{path}`"


def test_the_spec_options_reference_names_every_key() -> None:
    from aunet.core import spec as s
    from aunet.core.registry import Family, default_registry
    from aunet.jobs import config as c

    text = SPEC_OPTIONS.read_text(encoding="utf-8")

    def named(key: str) -> bool:  # `key`, or a table: `[model]`, `[[levels]]`, `[train.eval]`
        return re.search(rf"`\[*(train\.)?{re.escape(key)}\]*`", text) is not None

    classes = (
        s.Spec,
        s.ModelSpec,
        s.TokenizerSpec,
        s.NgramSpec,
        s.LevelSpec,
        c.RunSpec,
        c.TrainSpec,
        c.CheckpointSpec,
        c.EvalSpec,
        c.MetricsSpec,
        c.SampleSpec,
        c.ProfileSpec,
        c.DataSpec,
    )
    missing = [f"{k.__name__}.{f.name}" for k in classes for f in attrs.fields(k) if not named(f.name)]
    registry = default_registry()
    for family in Family:
        for kind, registration in registry.kinds(family).items():
            if not registration.origin.builtin:
                continue
            if not named(kind):
                missing.append(f"{family.value} {kind}")
            missing += [
                f"{family.value} {kind}: {f.name}"
                for f in attrs.fields(registration.cls)
                if f.init and not named(f.name)
            ]
    assert not missing, f"{SPEC_OPTIONS.relative_to(ROOT)} does not name: {missing}"


def test_the_readme_links_lead_to_files() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert any(link.startswith("docs/") for link in links), "the README links nowhere into docs/"
    missing = [link for link in links if link and not (ROOT / link).exists()]
    assert not missing, f"the README links to files that do not exist: {missing}"


def test_the_site_builds_in_strict_mode(tmp_path) -> None:
    missing = [m for m in BUILD_MODULES if not _installed(m)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: install the docs extra (pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-6000:]
    # The API reference was read from the docstrings, not left empty.
    page = (site / "reference" / "api" / "core-spec" / "index.html").read_text(encoding="utf-8")
    assert 'id="aunet.core.spec.Spec"' in page and 'id="aunet.core.convert.load_spec"' in (
        site / "reference" / "api" / "core-spec" / "index.html"
    ).read_text(encoding="utf-8")
    assert (site / "compare-bpb-vs-flops.png").exists() and (site / "compare-bpb-vs-time.png").exists()
