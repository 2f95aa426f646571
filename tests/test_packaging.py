"""What users install works: the wheel holds exactly the source tree's modules and data files,
and, installed into a fresh virtual environment and used from a directory outside the checkout,
it trains, evaluates, generates and runs the documentation's tested Python blocks. The editable
install (what the test run itself uses) imports as ``aunet`` only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, runnable_blocks

#: Folders and files of a checkout that are not part of a build (ignored by git).
_IGNORED = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", "*.pyc"
)


def IGNORED(folder: str, names: list[str]) -> set[str]:
    # runs/ of the checkout's root only: aunet.jobs.runs is a package
    return set(_IGNORED(folder, names)) | ({"runs"} if Path(folder) == ROOT else set())


PACKAGE_DIRS = ("cli", "core", "integrations", "jobs", "plugins", "splitters", "testing")


def source_files() -> set[str]:
    """Every file the wheel must hold, as ``aunet/...`` paths."""
    files = {"aunet/__init__.py", "aunet/__main__.py"}
    for top in PACKAGE_DIRS:
        files |= {
            f"aunet/{p.relative_to(ROOT).as_posix()}"
            for p in (ROOT / top).rglob("*.py")
            if "__pycache__" not in p.parts
        }
    files |= {
        f"aunet/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "corpora").glob("*") if p.suffix in (".xz", ".md")
    }
    files |= {f"aunet/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / "specs").rglob("*.toml")}
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the checkout (a stale build/ folder cannot leak in)."""
    tree = tmp_path_factory.mktemp("tree") / "aunet"
    shutil.copytree(ROOT, tree, ignore=IGNORED)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(tree),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("aunet-*.whl")
    return path


def test_every_package_folder_is_listed_in_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(json.loads(re.search(r"^packages = (\[.*?\])", text, re.MULTILINE | re.DOTALL).group(1)))
    folders = {"aunet"} | {
        ".".join(("aunet", *p.parent.relative_to(ROOT).parts))
        for top in PACKAGE_DIRS
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert listed == folders


@pytest.mark.slow
def test_wheel_holds_exactly_the_source_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    package_files = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert package_files == source_files(), (
        sorted(package_files - source_files()),
        sorted(source_files() - package_files),
    )
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "[aunet]" in entry_points and "builtin-splitters = aunet.plugins.splitters" in entry_points
    assert "aunet = aunet.cli.main:main" in entry_points
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new virtual environment with the wheel installed (not editable). Its dependencies are
    this test environment's, linked in by a .pth file through a folder that leaves out aunet's
    own editable install: installing torch and the rest afresh takes a minute, and that is not
    what is under test. Returns the venv's python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    deps = tmp_path / "deps"
    deps.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.name.startswith(("aunet", "__editable__")) or entry.suffix == ".pth":
            continue
        (deps / entry.name).symlink_to(entry)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "test-dependencies.pth").write_text(str(deps) + "\n")
    return python


@pytest.mark.slow
def test_installed_wheel_trains_evaluates_and_generates_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path, wheel)
    aunet = python.parent / "aunet"
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*argv: str) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (argv, result.stderr[-3000:])
        return result

    # The default spec, the embedded corpus and the shipped specs all come from the wheel.
    trained = run(
        str(aunet),
        "train",
        "--steps",
        "2",
        "--out",
        "X",
        "--device",
        "cpu",
        "--set",
        "train.eval.final_bytes=4096",
        "--set",
        "train.sample.bytes=16",
    )
    assert "validation:" in trained.stdout and "sample (the prompt" in trained.stdout
    evaluated = json.loads(
        run(
            str(aunet),
            "eval",
            "--ckpt",
            "X",
            "--device",
            "cpu",
            "--json",
            "--data",
            str(ROOT / "corpora" / "README.md"),
        ).stdout
    )
    assert evaluated["bpb"] > 0 and evaluated["bytes"] > 0
    generated = run(
        str(aunet), "generate", "--ckpt", "X", "--prompt", "And God said", "--max-bytes", "12", "--device", "cpu"
    )
    assert generated.stdout.startswith("And God said")
    # One more process: where aunet comes from, a shipped spec by name, and the documentation's
    # tested blocks (the README's and the site's).
    snippets = runnable_blocks()
    script = (
        "import json, sys, aunet, aunet.core.spec as s\n"
        "print(json.dumps([aunet.__file__, aunet.__version__, aunet.load_spec('aunet3-tiny').name]))\n"
        "for file, code in json.loads(sys.argv[1]):\n    exec(compile(code, file, 'exec'), {'__name__': 'readme'})\n"
    )
    checked = run(str(python), "-c", script, json.dumps(snippets))
    location, version, name = json.loads(checked.stdout.splitlines()[0])
    assert location.startswith(str(tmp_path / "venv")) and version == "0.1.0" and name == "aunet3-tiny"
    import torch

    if not torch.cuda.is_available():  # the same torch as the venv's
        missing = subprocess.run(
            [str(aunet), "eval", "--ckpt", "X", "--device", "cuda"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        errors = [line for line in missing.stderr.splitlines() if line.startswith("aunet: error:")]
        assert missing.returncode == 2 and "Traceback" not in missing.stderr, missing.stderr
        assert len(errors) == 1 and errors[0].startswith("aunet: error: --device cuda: "), missing.stderr


def test_editable_install_is_importable_as_aunet_only() -> None:
    import aunet.core
    import aunet.plugins
    import aunet.splitters

    assert Path(aunet.core.__file__).parent == ROOT / "core"
    for bare in ("core", "plugins", "splitters", "jobs"):
        found = subprocess.run([sys.executable, "-c", f"import {bare}"], capture_output=True, cwd="/")
        assert found.returncode != 0, f"'{bare}' is importable as a top-level module"
