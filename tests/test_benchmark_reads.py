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
