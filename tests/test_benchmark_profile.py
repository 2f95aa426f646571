"""Where ``python -m benchmarks decode-profile`` puts a decoding step's time: by place and kind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from conftest import ROOT


@pytest.fixture
def decode_profile(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import decode_profile

    return decode_profile


class _Attends(nn.Module):
    """A stage's kinds of work: a projection, a cache write, attention over the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8, bias=False)
        self.cache = torch.zeros(2, 1, 16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.proj(x)[:, None, None]  # (2, 1, 1, 8)
        self.cache[torch.arange(2)[:, None], :, torch.tensor([[3], [5]])] = q.transpose(1, 2)
        return F.scaled_dot_product_attention(q, self.cache, self.cache)[:, 0, 0]


def _profiled(decode_profile, model, run) -> dict[str, dict[str, float]]:
    handles = decode_profile.stage_ranges(model)
    try:
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    finally:
        for handle in handles:
            handle.remove()
    return decode_profile.attribute(prof.events())


def test_ops_go_to_the_stage_they_run_in_by_the_kind_of_their_outermost_op(decode_profile) -> None:
    byte, trunk = _Attends(), nn.Linear(8, 8, bias=False)
    model = SimpleNamespace(depth=1, trunk=trunk, encoders=[byte], decoders=[nn.Identity()])
    x = torch.randn(2, 8)
    parts = _profiled(decode_profile, model, lambda: trunk(byte(x).relu()))
    level0, coarser, outside = (parts[where] for where in decode_profile.WHERE)
    assert level0["attention"] > 0 and level0["matrix products"] > 0 and level0["cache"] > 0
    assert coarser["matrix products"] > 0 and coarser["attention"] == coarser["cache"] == 0
    assert outside["other ops"] > 0  # the relu between the stages
    assert outside["attention"] == outside["matrix products"] == outside["cache"] == 0
    # linear's mm and attention's kernel are counted with their outermost op, once.
    assert coarser["ops"] == 1
    assert not byte._forward_hooks and not byte._forward_pre_hooks  # the hooks are removed
    # A flat model's one stage is its level 0.
    flat = _profiled(decode_profile, SimpleNamespace(depth=0, trunk=byte, encoders=[], decoders=[]), lambda: byte(x))
    assert flat["level 0 stages"]["attention"] > 0 and flat["coarser stages"]["attention"] == 0
    assert decode_profile.kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert decode_profile.kind("aten::addmm") == "matrix products"
    assert decode_profile.kind("aten::where") == "other ops"


def test_a_profile_starts_once_the_prompts_are_prefilled(decode_profile) -> None:
    a, w = torch.randn(4, 8), torch.randn(8, 8)

    def call(start):
        a @ w  # the prefill's work: not profiled
        start()
        (a + 1).relu()
        return "done"

    result, wall, parts = decode_profile._profiled(call)
    assert result == "done" and wall > 0
    outside = parts["outside stages"]
    assert outside["matrix products"] == 0 and outside["other ops"] > 0 and outside["ops"] == 2


@pytest.mark.slow
def test_the_profile_of_aunet2_tiny_steps_finds_its_trunk_and_its_byte_stages(decode_profile) -> None:
    # Two rows: the trunk runs on the rows at a word boundary only, some steps on one of the two.
    records = decode_profile.run(smoke=True, specs=("aunet2-tiny",), batches=(2,))
    assert [(r["spec"], r["batch"]) for r in records] == [("aunet2-tiny", 2)]
    for r in records:
        level0, coarser, outside = (r["parts_ms"][where] for where in decode_profile.WHERE)
        # Every step runs the byte stages' attention; the trunk runs at the words' boundaries.
        assert level0["attention"] > 0 and level0["matrix products"] > 0
        assert coarser["matrix products"] > 0 and outside["attention"] == 0
        assert r["ops_per_step"]["level 0 stages"] > 20  # two blocks' ops at every step
        in_ops = sum(sum(part.values()) for part in r["parts_ms"].values())
        assert r["between_ops_ms"] == pytest.approx(r["profiled_ms_per_step"] - in_ops, abs=0.01)
        assert r["steps"] == 32 and r["ms_per_step"] > 0
    assert "aunet2-tiny" in decode_profile.report(records)


def test_a_benchmark_refuses_fewer_than_one_round_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["decode-profile", "--rounds", "0"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: --rounds must be 1 or more, got 0")
