"""The package installs as ``aunet`` (editable, which the test run itself uses, and as a built
wheel): no bare ``core`` or ``plugins`` modules, data files included, entry points declared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (path,) = out.glob("aunet-*.whl")
    return path


@pytest.mark.slow
def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"aunet", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for required in ("aunet/__init__.py", "aunet/core/registry.py", "aunet/splitters/words.py",
                     "aunet/plugins/splitters.py", "aunet/corpora/en_web.txt.xz", "aunet/testing.py"):  # fmt: skip
        assert required in names, required
    assert not any(n.startswith(("aunet/tests/", "aunet/benchmarks/", "aunet/examples/")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[aunet]" in entry_points and "builtin-splitters = aunet.plugins.splitters" in entry_points


@pytest.mark.slow
def test_installed_wheel_runs(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import aunet, json; print(json.dumps(aunet.__file__))"
    where = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(where.stdout).startswith(str(target)), where
    listing = subprocess.run([sys.executable, "-m", "aunet", "plugins", "--json"], env=env, capture_output=True,
                             text=True, cwd=tmp_path)  # fmt: skip
    kinds = {e["kind"] for e in json.loads(listing.stdout)["families"]["splitter"]}
    assert {"whitespace", "word-pair", "4-word"} <= kinds


def test_editable_install_is_importable_as_aunet_only() -> None:
    import aunet.core
    import aunet.plugins
    import aunet.splitters

    assert Path(aunet.core.__file__).parent == ROOT / "core"
    for bare in ("core", "plugins", "splitters"):
        found = subprocess.run([sys.executable, "-c", f"import {bare}"], capture_output=True, cwd="/")
        assert found.returncode != 0, f"'{bare}' is importable as a top-level module"
