"""The ``Encoding`` contract: each kind agrees with itself across its four forms (a document, a
prompt, a context-continuation pair, and the bytes its ids stand for)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aunet
from aunet.core.encoding import SplitterEncoding, splitter_encoding
from aunet.core.errors import InputError
from aunet.core.tokens import BOS, EOS, IGNORE
from aunet.jobs.data.bpe import BpeEncoding, BpeTokenizer
from aunet.jobs.data.corpus import load_corpus

TEXT = st.binary(max_size=120) | st.text(max_size=60).map(str.encode)


@pytest.fixture(scope="module")
def words() -> SplitterEncoding:
    return splitter_encoding(aunet.load_spec("aunet3-tiny"))


@pytest.fixture(scope="module")
def bpe() -> BpeEncoding:
    tokenizer = BpeTokenizer.train((d.data for d in load_corpus(None).train[:20]), 400)
    return BpeEncoding(tokenizer, 3.0)


@settings(max_examples=60, deadline=None)
@given(data=TEXT, eos=st.booleans())
def test_bytes_encode_as_compute_levels_says(words: SplitterEncoding, data: bytes, eos: bool) -> None:
    spec = aunet.load_spec("aunet3-tiny")
    e = words.encode(data, eos=eos)
    assert e.tokens.tolist() == aunet.encode(data, eos=eos).tolist()
    assert e.levels.tolist() == aunet.compute_levels(spec, data, eos=eos).tolist()


@settings(max_examples=60, deadline=None)
@given(data=TEXT, limit=st.integers(1, 80))
def test_a_prompt_is_the_tail_that_fits_and_its_stream_continues_it(
    words: SplitterEncoding, data: bytes, limit: int
) -> None:
    prompt = words.prompt(data, limit)
    kept = data[max(0, len(data) - limit) :]
    assert bytes(prompt.ids.astype(np.uint8)) == kept and prompt.dropped == len(data) - len(kept)
    assert prompt.levels.tolist() == words.encode(kept, eos=False).levels[1:].tolist()
    more = b"and then some more words."
    pushed = [prompt.stream.push(b) for b in more]
    assert b"".join(p.data for p in pushed) == more
    assert [p.level for p in pushed] == words.encode(kept + more, eos=False).levels[len(kept) + 1 :].tolist()


@settings(max_examples=40, deadline=None)
@given(context=TEXT, continuation=TEXT, limit=st.integers(1, 80))
def test_pairs_score_the_continuation_of_what_fits(
    words: SplitterEncoding, bpe: BpeEncoding, context: bytes, continuation: bytes, limit: int
) -> None:
    for encoding in (words, bpe):
        pair = encoding.pair(context, continuation, limit)
        n = len(pair.encoded) - 1
        assert n <= limit and 0 <= pair.scored <= n
        ids = pair.encoded.tokens[1:]
        covered = encoding.covered(ids) if encoding is bpe else len(ids)
        assert covered + pair.dropped == len(context) + len(continuation)
        tail = ids[n - pair.scored :]
        if encoding is words:
            assert bytes(tail.astype(np.uint8)) == continuation[len(continuation) - pair.scored :]
        else:
            assert bpe.tokenizer.decode(tail.tolist()) == continuation[pair.continuation_dropped :]


@settings(max_examples=40, deadline=None)
@given(data=TEXT)
def test_bpe_ids_stand_for_their_bytes(bpe: BpeEncoding, data: bytes) -> None:
    e = bpe.encode(data)
    assert e.tokens[0] == BOS and e.tokens[-1] == EOS and not e.levels.any()
    targets = np.concatenate([e.tokens[1:], [IGNORE]])
    assert bpe.target_bytes(targets) == len(data) == bpe.covered(e.tokens)
    prompt = bpe.prompt(data, 10**6)
    assert b"".join(prompt.stream.push(int(i)).data for i in prompt.ids) == data


def test_a_bpe_spec_alone_has_no_encoding() -> None:
    spec = aunet.parse_spec(
        'name = "b"\n[model]\ntokenizer = { kind = "bpe", vocab_size = 300 }\n[[levels]]\ndim = 32\n'
        'stage = { kind = "transformer", layers = 1, head_dim = 16 }\n'
    )
    with pytest.raises(InputError, match=r"aunet.load_run\(DIR\).encoding"):
        splitter_encoding(spec)
