"""``aunet-runtime.zip``: what an exported model needs of aunet at inference, and nothing more.

An exported folder's remote code (``modeling_aunet.py``) imports the installed aunet when there is
one, else this zip: aunet's core, its built-in components and this integration (no command line,
trainer, data or harness code), with its metadata (the built-in components register through its
entry points, filtered to those it holds) and its three pure-Python dependencies (attrs, cattrs,
pluggy, with their licenses). The zip is built from the installed packages, or copied as it is
when aunet itself runs from one (``aunet.integrations.hf.bridge.write_runtime``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import zipfile
from pathlib import Path

#: The parts of aunet a model needs at inference: whole packages (no corpora, specs or test kits),
#: and this integration's modules (not its command or its export: no command line in the zip).
RUNTIME_PACKAGES = ("", "core", "plugins", "plugins/nn", "splitters")
RUNTIME_MODULES = (
    "integrations/__init__.py",
    "integrations/hf/__init__.py",
    "integrations/hf/bridge.py",
    "integrations/hf/configuration_aunet.py",
    "integrations/hf/modeling_aunet.py",
    "integrations/hf/runtime.py",
    "integrations/hf/tokenization_aunet.py",
)
#: aunet's pure-Python dependencies; numpy and torch come with ``transformers`` itself.
RUNTIME_DEPENDENCIES = ("attrs", "cattrs", "pluggy")
RUNTIME_FILE = "aunet-runtime.zip"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed timestamps: the same code gives the same zip


def runtime_files() -> dict[str, bytes]:
    """Name in the zip -> content: aunet's runtime packages with its metadata (entry points: the
    built-in plugins register through them), and each dependency's package and dist-info."""
    files: dict[str, bytes] = {}
    root = Path(importlib.util.find_spec("aunet").origin).resolve().parent  # the aunet package (already imported)
    for package in RUNTIME_PACKAGES:
        folder = root / package
        if not (folder / "__init__.py").is_file():
            raise RuntimeError(f"aunet's runtime package '{package or 'aunet'}' is missing from {root}")
        for path in sorted(folder.glob("*.py")):
            files[f"aunet/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    for module in RUNTIME_MODULES:
        files[f"aunet/{module}"] = (root / module).read_bytes()
    dist = importlib.metadata.distribution("aunet")
    info = f"aunet-{dist.version}.dist-info"
    files[f"{info}/METADATA"] = (dist.read_text("METADATA") or f"Name: aunet\nVersion: {dist.version}\n").encode()
    files[f"{info}/entry_points.txt"] = runtime_entry_points(dist.read_text("entry_points.txt") or "").encode()
    license_file = root / "LICENSE"
    if license_file.is_file():
        files[f"{info}/licenses/LICENSE"] = license_file.read_bytes()
    for name in RUNTIME_DEPENDENCIES:
        dist = importlib.metadata.distribution(name)
        for entry in dist.files or []:
            if "__pycache__" in entry.parts or entry.suffix == ".pyc" or entry.parts[0] == "..":
                continue
            path = Path(entry.locate())
            if path.is_file():
                files[entry.as_posix()] = path.read_bytes()
    return files


def write_runtime(path: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(runtime_files().items()):
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data, compress_type=zipfile.ZIP_DEFLATED)


def runtime_entry_points(text: str) -> str:
    """The entry points of aunet's own that its runtime can load: those whose module is in the
    runtime (the built-in components); the commands' (the CLI, the harness) stay out with them."""
    kept, section = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
            if section != "[aunet]":
                continue
        elif "=" in stripped and section == "[aunet]":
            module = stripped.split("=", 1)[1].strip().split(":")[0]
            parts = module.split(".")[1:]
            if "/".join(parts[:-1]) not in RUNTIME_PACKAGES and "/".join(parts) + ".py" not in RUNTIME_MODULES:
                continue
        elif section != "[aunet]":
            continue  # console scripts and other groups: the runtime has no command line
        kept.append(line)
    return "\n".join(kept) + "\n"
