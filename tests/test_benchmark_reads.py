"""The decoding benchmark's count of bytes read (``python -m benchmarks generate``'s traffic bound)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.generate import _bytes_read

    return _bytes_read


def test_matrix_products_and_attention_count_their_operands_and_gathers_twice_what_they_copy(bytes_read) -> None:
    a, w = torch.randn(3, 8), torch.randn(16, 8)
    assert bytes_read(lambda: F.linear(a, w)) == 4 * (3 * 8 + 16 * 8)  # the weight read whole, once
    q = torch.randn(2, 4, 1, 8)
    cache = torch.randn(5, 4, 32, 8)
    # Attention reads its queries, keys and values: a view of 10 of 32 slots counts 10.
    view = cache[:2, :, :10]
    assert bytes_read(lambda: F.scaled_dot_product_attention(q, view, view)) == 4 * (64 + 2 * 640)
    rows = torch.tensor([0, 3])
    assert bytes_read(lambda: cache.index_select(0, rows)) == 2 * 4 * 2 * 4 * 32 * 8  # read and written
    assert bytes_read(lambda: (a + 1).relu()) == 0  # elementwise work is not counted


@pytest.mark.slow
def test_the_decoding_benchmark_counts_every_weight_once_per_byte_step_and_bounds_the_ratio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import generate

    records = generate.run(smoke=True, specs=("aunet2-tiny",), modes=("eager",))
    found = {(r["spec"], r["batch"]): r for r in records}
    byte, aunet = found[("byte-tiny", 1)], found[("aunet2-tiny", 1)]
    weights = sum(
        p.numel() * p.element_size() for p in generate._models("cpu", ("byte-tiny",))["byte-tiny"][0].parameters()
    )
    # A one-row byte-tiny step reads every weight (the embedding only its row) and its cached keys.
    assert weights - 256 * 320 * 4 < byte["mb_read_per_byte"] * 1e6 < weights + 10e6
    # aunet2-tiny reads its trunk once per word: about a quarter of byte-tiny's bytes per byte.
    assert aunet["mb_read_per_byte"] < byte["mb_read_per_byte"] / 3
    assert aunet["traffic_bound"] == round(byte["mb_read_per_byte"] / aunet["mb_read_per_byte"], 2)
    # Two rows share each weight read: fewer bytes per byte than one row.
    assert found[("byte-tiny", 2)]["mb_read_per_byte"] < byte["mb_read_per_byte"] * 0.7
    assert all(r["read_gb_per_s"] > 0 for r in records)
    # One round: the per-round range of the ratio is that round's ratio, byte-tiny's own is 1.
    assert byte["vs_byte_tiny_rounds"] == [1.0, 1.0]
    low, high = aunet["vs_byte_tiny_rounds"]
    assert low == high and abs(low - aunet["vs_byte_tiny"]) <= 0.011
    assert "1.00-1.00x" in generate.report(records).splitlines()[1]  # byte-tiny, one row


def test_compiled_steps_are_counted_with_the_shapes_they_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from aunet.core import decoding
    from benchmarks import generate

    torch.manual_seed(0)
    model, _, _ = generate._models("cpu", ("aunet2-tiny",))["aunet2-tiny"]
    prompts, continuations = generate._rows(1)
    ids = [list(c) for c in continuations]

    def steps(mode: str) -> int:  # what 8 steps read: a decode of 9 bytes less one of 1
        one, nine = (generate._bytes_read(generate._decoder(model, None, prompts, ids, n, mode)) for n in (1, 9))
        return nine - one

    read = {mode: steps(mode) for mode in decoding.STEP_MODES}
    # 513 bytes in: the byte stages' windows (512) are full in every mode, but the trunk's cache of
    # 1,024 slots holds about a hundred words, which eager steps read, compiled ones a bucket of
    # (up to a quarter more) and static ones whole.
    assert read["eager"] < read["compiled"] < read["static"]
    assert read["compiled"] - read["eager"] < (read["static"] - read["eager"]) / 3
    assert model not in decoding._COMPILED  # counted uncompiled: a dispatch mode sees no compiled op
