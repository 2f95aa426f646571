"""Decoding bytes into characters: against Python's decoder, and the two paths against each other."""

from __future__ import annotations

import numpy as np
from hypothesis import given

from aunet.core.text import INVALID, decode, decode_any_bytes, general_category
from aunet.testing import any_bytes, texts


def python_code_points(data: bytes) -> list[int]:
    """Python's decoder, one escape per undecodable byte, as the oracle."""
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        out.append(INVALID if 0xDC80 <= ord(ch) <= 0xDCFF else ord(ch))
    return out


@given(data=any_bytes())
def test_code_points_match_pythons_decoder(data: bytes) -> None:
    chars = decode(data)
    assert chars.cp.tolist() == python_code_points(data)
    assert len(chars) == len(chars.cp)
    assert int(chars.nbytes.sum()) == len(data)
    ends = chars.ends
    assert ends.tolist() == (np.cumsum(chars.nbytes) - 1).tolist()


@given(data=texts())
def test_fast_and_general_paths_agree_on_valid_utf8(data: bytes) -> None:
    fast, general = decode(data), decode_any_bytes(data)
    assert fast.n_chars == general.n_chars
    assert (fast.keep is None) == (general.keep is None)
    if fast.keep is not None:
        assert np.array_equal(fast.keep, general.keep)
    for name in ("multi", "multi_cp", "multi_len", "invalid", "unmarkable"):
        assert getattr(fast, name).tolist() == getattr(general, name).tolist(), name


def test_truncated_sequences_are_unmarkable_but_lone_continuations_are_not() -> None:
    chars = decode(b"\xe4\xb8A\x80\xf0\x9f\x98")
    # characters: E4, B8, 'A', 80, F0, 9F, 98 (all invalid but 'A')
    assert chars.cp.tolist() == [INVALID, INVALID, 65, INVALID, INVALID, INVALID, INVALID]
    assert chars.unmarkable.tolist() == [0, 1, 4, 5, 6]


def test_general_category_table() -> None:
    table = general_category()
    assert table.shape == (INVALID + 1,)
    from aunet.core.text import CATEGORIES

    assert CATEGORIES[table[ord("a")]] == "Ll" and CATEGORIES[table[ord("中")]] == "Lo"
    assert CATEGORIES[table[0x0301]] == "Mn" and CATEGORIES[table[ord("٣")]] == "Nd"
    assert table[INVALID] == len(CATEGORIES)
