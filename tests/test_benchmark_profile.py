"""Where ``python -m benchmarks decode-profile`` puts a decoding step's time: by place and kind."""

from __future__ import annotations

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


def _profiled(decode_profile, run, depth: int) -> dict[str, dict[str, float]]:
    from aunet.core.labels import labelled

    with labelled(), torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return decode_profile.attribute(prof.events(), depth)


def test_ops_go_to_the_place_of_the_walks_label_they_run_under_by_their_outermost_ops_kind(decode_profile) -> None:
    from aunet.core.labels import label

    byte, trunk, pool = _Attends(), nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
    x = torch.randn(2, 8)

    def walk() -> None:
        with label("encoder.0"):
            h = byte(x)
        with label("pool.1"):
            h = pool(h)
        with label("trunk"):
            h = trunk(h)
        h.relu()  # between the labels: the rest of the step

    parts = _profiled(decode_profile, walk, depth=1)
    level0, coarser, pooling, rest = (parts[where] for where in decode_profile.WHERE)
    assert level0["attention"] > 0 and level0["matrix products"] > 0 and level0["indexing"] > 0
    assert coarser["matrix products"] > 0 and coarser["attention"] == coarser["indexing"] == 0
    assert pooling["matrix products"] > 0 and pooling["attention"] == 0
    assert rest["other ops"] > 0 and rest["attention"] == rest["matrix products"] == rest["indexing"] == 0
    # linear's mm and attention's kernel are counted with their outermost op, once.
    assert coarser["ops"] == pooling["ops"] == 1

    # A flat model's trunk is its level 0; labels that are not the walk's change nothing.
    def flat() -> None:
        with label("trunk"), label("something else"):
            byte(x)

    parts = _profiled(decode_profile, flat, depth=0)
    assert parts["level 0 stages"]["attention"] > 0 and parts["coarser stages"]["attention"] == 0
    assert decode_profile.place("decoder.2", 3) == "coarser stages" and decode_profile.place("head", 3) is None
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

    result, wall, parts = decode_profile._profiled(call, 0)
    assert result == "done" and wall > 0
    rest = parts["rest of the step"]
    assert rest["matrix products"] == 0 and rest["other ops"] > 0 and rest["ops"] == 2
    with pytest.raises(RuntimeError, match="ended before the part to time began"):
        decode_profile._profiled(lambda start: None, 0)


@pytest.mark.slow
def test_the_profile_of_aunet2_tiny_steps_finds_its_trunk_and_its_byte_stages(decode_profile) -> None:
    # Two rows: the trunk runs on the rows at a word boundary only, some steps on one of the two.
    records = decode_profile.run(smoke=True, specs=("aunet2-tiny",), batches=(2,))
    assert [(r["spec"], r["batch"]) for r in records] == [("aunet2-tiny", 2)]
    for r in records:
        level0, coarser, pooling, rest = (r["parts_ms"][where] for where in decode_profile.WHERE)
        # Every step runs the byte stages' attention; the trunk and the poolers and upsamplers'
        # products run at the words' boundaries; the head's product is the rest of the step's.
        assert level0["attention"] > 0 and level0["matrix products"] > 0
        assert coarser["matrix products"] > 0 and pooling["matrix products"] > 0 and rest["matrix products"] > 0
        assert pooling["attention"] == rest["attention"] == 0
        assert r["ops_per_step"]["level 0 stages"] > 20  # two blocks' ops at every step
        assert r["between_ops_ms"] > 0 and r["profiled_ms_per_step"] > 0 and r["ms_per_step"] > 0
        assert r["steps"] == 32  # the steps of 33 bytes, the first of which the prefill gives
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
