"""Prompts prefilled in chunks (``aunet.core.decoding.prefill_chunks``): the first chunk as a
prompt, each later one continuing the rows in the decoding state. The logits and every step after
are the whole prefill's to float rounding, for every level, pooler (stateful ones continue their
open segment), upsampler and n-gram table; a chunk's attention masks span the chunk against the
cache, not the prompt against itself. Models with a routed level are refused with the reason."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aunet
from aunet.core.decoding import chunk_refusal, new_state, prefill, prefill_chunks, step
from aunet.core.encoding import splitter_encoding
from aunet.core.model import build_model
from aunet.core.modules import DensePlan
from aunet.core.resources import spec_path
from aunet.jobs.inference.generate import CPU_PREFILL_CHUNK, _prompt_batch, decode, default_prefill_chunk, sample_next
from aunet.testing.models import small_specs
from aunet.testing.splitters import texts

TOLERANCE = 1e-5


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None)


def prefilled(model, prompts: list[bytes], chunk: int | None, capacity: int = 256):
    """A decoding state of ``prompts`` prefilled whole (``chunk`` None) or in chunks, and its logits."""
    rows = [splitter_encoding(model.spec).prompt(p, model.spec.model.context - 1) for p in prompts]
    batch = _prompt_batch(model.spec, rows, "cpu")
    state = new_state(model, len(prompts), capacity)
    if chunk is None:
        return state, prefill(model, state, *batch)
    return state, prefill_chunks(model, state, *batch, chunk=chunk)


def close(a, b, what: str) -> None:
    """Tensors (or tuples of them, or None) equal within the tolerance."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=TOLERANCE, atol=TOLERANCE, msg=lambda m: f"{what}: {m}")
    elif isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            close(x, y, what)
    else:
        assert a is None and b is None, what


def assert_same_state_and_steps(model, prompts: list[bytes], chunk: int, steps: int = 8) -> None:
    """The chunked prefill's logits and state are the whole one's; so are the logits of steps
    after it that reach every level (the trunk included), with one row sitting some steps out."""
    whole, expected = prefilled(model, prompts, None)
    chunked, got = prefilled(model, prompts, chunk)
    close(got, expected, "prefill logits")
    for i in range(model.depth + 1):
        assert torch.equal(chunked.count[i], whole.count[i]), f"level {i} counts"
        if i:
            assert torch.equal(chunked.boundary[i], whole.boundary[i]), f"level {i} boundaries"
            close(chunked.last_out[i], whole.last_out[i], f"level {i} last output")
    for key, cache in whole.caches.items():
        mine = chunked.caches[key]
        assert torch.equal(mine.length, cache.length) and torch.equal(mine.pos, cache.pos), f"{key} positions"
        assert mine.filled == cache.filled, f"{key}: reads {mine.filled} slots, the whole prefill {cache.filled}"
        written = (cache.pos >= 0)[:, None, :, None]  # slots holding a position (the spare holds padding)
        for layer in range(len(cache.k)):
            close(mine.k[layer] * written, cache.k[layer] * written, f"{key} keys of layer {layer}")
            close(mine.v[layer] * written, cache.v[layer] * written, f"{key} values of layer {layer}")
    close(chunked.pool_states, whole.pool_states, "pooler states")
    close(chunked.recent, whole.recent, "n-gram ids")
    close(chunked.level_logits, whole.level_logits, "level logits")
    assert chunked.prepared.keys() == whole.prepared.keys()
    for i in whole.prepared:
        close(chunked.prepared[i], whole.prepared[i], f"upsampler {i}'s prepared rows")
    b = len(prompts)
    for t in range(steps):
        token = torch.tensor([32 if (t + r) % 3 == 0 else 97 + r for r in range(b)])
        # A space closes a segment of every level on alternate steps: the trunk runs too.
        level = [(model.depth if t % 2 else 1) * int(token[r] == 32) for r in range(b)]
        alive = [b == 1 or r != b - 1 or t % 4 != 2 for r in range(b)]  # the last row sits out
        expected = step(model, whole, token, level, alive)
        got = step(model, chunked, token, level, alive)
        close(got[torch.tensor(alive)], expected[torch.tensor(alive)], f"step {t}")
    assert whole.stage_calls[-1] > 0, "no step reached the top level"


@pytest.mark.parametrize("name", ["aunet2-tiny", "aunet3-tiny", "aunet4-tiny", "megabyte-tiny", "spacebyte-tiny"])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_shipped_specs_prefill_in_chunks_as_whole(name: str, chunk: int) -> None:
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path(name))).eval()
    prompts = [
        b"In the beginning God created the heaven and the earth. And the earth was without form",
        b"short",
        b"x" * 70,  # one long word: no boundary in most chunks
    ]
    assert_same_state_and_steps(model, prompts, chunk)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=small_specs(router=None).filter(lambda s: not any(level.router for level in s.levels)),
    prompts=st.lists(texts(60), min_size=1, max_size=3),
    chunk=st.integers(1, 20),
    seed=st.integers(0, 100),
)
def test_random_models_prefill_in_chunks_as_whole(spec, prompts: list[bytes], chunk: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model(spec).eval()
    assert_same_state_and_steps(model, prompts, chunk, steps=4)


@pytest.mark.parametrize("pooler", ["mean", "attention"])
def test_a_stateful_pooler_continues_its_open_segment_across_chunks(pooler: str) -> None:
    torch.manual_seed(0)
    spec = aunet.parse_spec(
        "[model]\ncontext = 128\n"
        '[[levels]]\ndim = 32\nstage = { kind = "transformer", layers = 1, head_dim = 16 }\n'
        f'[[levels]]\ndim = 32\nsplitter = "whitespace"\npooler = {{ kind = "{pooler}" }}\n'
        'stage = { kind = "transformer", layers = 1, head_dim = 16 }'
    )
    model = build_model(spec).eval()
    # Chunks of 4 cut every word: each segment's pooled vector spans two or three chunks.
    assert_same_state_and_steps(model, [b"abcdefghij klmnopq rstu", b"wxyz wxyz"], 4)


def test_a_chunks_attention_masks_span_the_chunk_not_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    from aunet.plugins.nn import transformer

    widths = []

    class Recorded(DensePlan):
        def __init__(self, mask: torch.Tensor) -> None:
            widths.append(tuple(mask.shape[-2:]))
            super().__init__(mask)

    monkeypatch.setattr(transformer, "DensePlan", Recorded)
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path("aunet2-tiny"))).eval()
    prompt = b"And God said, Let there be light: and there was light. " * 12  # 672 bytes
    prefilled(model, [prompt], None, capacity=1024)
    assert max(q for q, _ in widths) == len(prompt) + 1  # whole: every position against every one
    widths.clear()
    prefilled(model, [prompt], 64, capacity=1024)
    assert max(q for q, _ in widths) == 64
    assert max(q * k for q, k in widths) <= 64 * (len(prompt) + 1)


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_decoding_with_prefill_chunks_gives_the_same_bytes_and_logits(mode: str) -> None:
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path("aunet2-tiny"))).eval()
    prompts = [b"In the beginning God created", b"", b"And the earth was without form, and void", b"Let"]
    options = {"choose": greedy, "keep_logits": True, "batch_size": 2, "step_mode": mode}
    whole = decode(model, prompts, 10, prefill_chunk=0, **options)
    chunked = decode(model, prompts, 10, prefill_chunk=5, **options)
    assert chunked.new_bytes == whole.new_bytes
    for a, b in zip(chunked.logits, whole.logits, strict=True):
        torch.testing.assert_close(torch.stack(a), torch.stack(b), rtol=TOLERANCE, atol=TOLERANCE)


def test_a_routed_model_and_a_negative_chunk_are_refused_with_the_reason() -> None:
    torch.manual_seed(0)
    hnet = build_model(aunet.load_spec(spec_path("hnet-tiny"))).eval()
    assert chunk_refusal(hnet) == "level 1 is routed (its router decides boundaries over whole prompts)"
    with pytest.raises(ValueError, match="cannot be prefilled in chunks: level 1 is routed"):
        aunet.generate(hnet, [b"x"], 2, prefill_chunk=8)
    # By default (and with 0) a routed model's prompts are prefilled whole.
    assert default_prefill_chunk(hnet) == 0
    assert aunet.generate(hnet, [b"In the"], 3) == aunet.generate(hnet, [b"In the"], 3, prefill_chunk=0)
    model = build_model(aunet.load_spec(spec_path("aunet2-tiny"))).eval()
    assert chunk_refusal(model) is None
    with pytest.raises(ValueError, match="prefill_chunk must be >= 1 position, or 0 for whole prompts, got -1"):
        aunet.generate(model, [b"x"], 2, prefill_chunk=-1)


def test_a_cpu_prefills_in_chunks_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from aunet.jobs.inference import generate

    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path("aunet2-tiny"))).eval()
    assert default_prefill_chunk(model) == CPU_PREFILL_CHUNK == 256
    chunks = []
    monkeypatch.setattr(
        generate, "prefill_chunks", lambda *a, chunk, **k: chunks.append(chunk) or prefill_chunks(*a, chunk=chunk, **k)
    )
    prompt = b"And God said, Let there be light: and there was light. " * 6  # 336 bytes: two chunks
    by_default = decode(model, [prompt], 6, choose=greedy, keep_logits=True)
    assert chunks == [256]
    whole = decode(model, [prompt], 6, choose=greedy, keep_logits=True, prefill_chunk=0)
    assert by_default.new_bytes == whole.new_bytes
    close(torch.stack(by_default.logits[0]), torch.stack(whole.logits[0]), "default against whole")


def test_the_cli_refuses_a_chunk_for_a_routed_run_in_one_line(tmp_path) -> None:
    from aunet.core.overrides import apply_overrides
    from aunet.jobs.train.loop import train

    from conftest import SHRUNK_AUNET2, run_cli

    spec = apply_overrides(aunet.load_spec("hnet-tiny"), ["model.context=64", *SHRUNK_AUNET2])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("In the beginning God created the heavens and the earth.\n" * 40)
    train(spec, data=corpus, out=tmp_path / "run", steps=1, device="cpu")
    refused = run_cli("generate", "--ckpt", str(tmp_path / "run"), "--prompt", "In", "--prefill-chunk", "8")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("aunet: error")]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert errors == [
        "aunet: error: --prefill-chunk: this model's prompts cannot be prefilled in chunks: level 1 is routed "
        "(its router decides boundaries over whole prompts); give 0 (whole prompts)"
    ], refused.stderr
    whole = run_cli(
        "generate", "--ckpt", str(tmp_path / "run"), "--prompt", "In", "--max-bytes", "3", "--prefill-chunk", "0"
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
