"""Parameters and FLOPs per byte: the paper's 1B-class figures, and agreement with built models."""

from __future__ import annotations

import json

import pytest

import aunet
from aunet.core.accounting import account

from conftest import ROOT, run_cli

PAPER = {  # docs/method.md section 7: parameters, FLOPs per byte
    "aunet2-1b": (1.3e9, 1.8e9),
    "aunet3-1b": (2.5e9, 2.3e9),
    "aunet4-1b": (4.2e9, 2.8e9),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configurations_within_3_percent(name: str) -> None:
    params, flops = PAPER[name]
    result = run_cli("spec", "show", str(ROOT / "specs" / "paper" / f"{name}.toml"), "--json")
    assert result.returncode == 0, result.stderr
    sizes = json.loads(result.stdout)
    assert isinstance(sizes["parameters"], int) and isinstance(sizes["flops_per_byte"], float)
    assert abs(sizes["parameters"] / params - 1) < 0.03, sizes["parameters"]
    assert abs(sizes["flops_per_byte"] / flops - 1) < 0.03, sizes["flops_per_byte"]
    assert sizes["flops_per_byte_all"] > sizes["flops_per_byte"]


@pytest.mark.parametrize("name", ["aunet2-tiny", "aunet3-tiny", "aunet4-tiny", "byte-tiny"])
def test_counted_parameters_equal_the_built_model(name: str) -> None:
    spec = aunet.load_spec(ROOT / "specs" / f"{name}.toml")
    sizes = account(spec)
    model = aunet.build_model(spec)
    assert sizes.parameters == sum(p.numel() for p in model.parameters())
    by_module = {
        "embedding": model.embed,
        "output": [model.norm, model.head],
    }
    for key, modules in by_module.items():
        modules = modules if isinstance(modules, list) else [modules]
        assert sizes.parameters_by_component[key] == sum(p.numel() for m in modules for p in m.parameters())
    for i, encoder in enumerate(model.encoders):
        assert sizes.parameters_by_component[f"levels[{i}].encoder"] == sum(p.numel() for p in encoder.parameters())


def test_contraction_is_measured_when_the_spec_gives_none() -> None:
    sizes = account(aunet.load_spec(ROOT / "specs" / "aunet3-tiny.toml"))
    assert sizes.contraction_measured
    k1, k2 = sizes.contraction[1:]
    assert 4.0 < k1 < 5.5 and 6.5 < k2 < 9.5  # the paper's English figures: about 4.4-5 and 7-8


def test_spec_show_prints_a_valid_spec_with_sizes(tmp_path) -> None:
    result = run_cli("spec", "show", str(ROOT / "specs" / "aunet2-tiny.toml"))
    assert "# parameters: 5,508,800" in result.stdout and "# FLOPs per byte:" in result.stdout
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert run_cli("spec", "check", str(again)).returncode == 0
