"""The component interfaces of aunet.core are abstract and importable without building anything."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest


def test_interfaces_are_abstract() -> None:
    from aunet.core import AttentionBackend, Pooler, Splitter, Stage, Upsampler

    for cls in (Splitter, Stage, Pooler, Upsampler, AttentionBackend):
        assert inspect.isabstract(cls), cls
        with pytest.raises(TypeError):
            cls()


def test_reading_specs_and_splitting_do_not_import_torch() -> None:
    code = (
        "import sys, aunet\n"
        "from aunet.core.registry import Registry\n"
        "r = Registry.default()\n"
        "spec = aunet.parse_spec('[[levels]]\\n[[levels]]\\nsplitter = \"whitespace\"', registry=r)\n"
        "spec.splitter_stack().levels(b'a b c')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_gather_rows() -> None:
    import torch

    from aunet.core.modules import gather_rows

    x = torch.arange(24.0).reshape(2, 4, 3)
    index = torch.tensor([[0, 3], [2, 2]])
    assert gather_rows(x, index).tolist() == [
        [x[0, 0].tolist(), x[0, 3].tolist()],
        [x[1, 2].tolist(), x[1, 2].tolist()],
    ]
