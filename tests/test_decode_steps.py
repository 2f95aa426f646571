"""How decoding steps run (``aunet.core.decoding.StepMode``): eager steps compute only the rows and
cache slots each level needs, static steps keep every shape fixed (so a step allocates the same
whatever the length), compiled steps run under torch.compile and match eager within a stated
tolerance. Generation equals teacher forcing in eager and static modes for every spec
(``test_generate.py`` and the kits check both)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile

import aunet
from aunet.core.decoding import StepMode, new_state, prefill, read_bucket, step
from aunet.core.model import Part, build_model
from aunet.core.resources import spec_path
from aunet.core.tokens import BOS
from aunet.jobs.inference.generate import decode, sample_next

#: Compiled steps against eager ones: inductor reorders float32 sums (fused RMSNorm, softmax).
COMPILED_TOLERANCE = 1e-4


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None)


def small_aunet() -> torch.nn.Module:
    torch.manual_seed(0)
    spec = aunet.parse_spec(
        "[model]\ncontext = 128\n"
        '[[levels]]\ndim = 32\nstage = { kind = "transformer", layers = 1, head_dim = 16, window = 32 }\n'
        '[[levels]]\ndim = 64\nsplitter = "whitespace"\nstage = { kind = "transformer", layers = 1, head_dim = 16 }'
    )
    return build_model(spec).eval()


def step_allocations(model: torch.nn.Module, mode: StepMode, at: tuple[int, ...]) -> dict[int, int]:
    """Bytes the tensors of one decoding step allocate, at each step number in ``at``, two rows
    stepping past the caches' capacity (64 positions) so that the rings wrap."""
    state = new_state(model, 2, 64, mode=mode)
    tokens = torch.tensor([[BOS, 73, 110, 32], [BOS, 84, 104, 101]])
    levels = torch.tensor([[1, 0, 0, 1], [1, 0, 0, 0]], dtype=torch.uint8)
    prefill(model, state, tokens, levels, torch.tensor([4, 4]))
    found = {}
    for t in range(max(at) + 1):
        args = (model, state, torch.tensor([97, 32]), [t % 3 == 2, t % 5 == 4], [True, True])
        if t not in at:
            step(*args)
            continue
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(*args)
        found[t] = sum(max(0, event.self_cpu_memory_usage) for event in prof.key_averages())
    return found


def test_a_static_step_allocates_the_same_however_long_the_text() -> None:
    model = small_aunet()
    with torch.no_grad():
        static = step_allocations(model, StepMode.STATIC, (12, 40, 150))
    assert static[12] > 0, "the profiler saw no allocation: the measurement itself is broken"
    assert static[12] == static[40] == static[150], f"bytes allocated per step grew with the length: {static}"
    # Eager steps read the slots used so far: what they allocate grows until the rings are full.
    with torch.no_grad():
        eager = step_allocations(model, StepMode.EAGER, (12, 40))
    assert eager[40] > eager[12]


def replay(texts: list[bytes]):
    """A ``choose`` that picks each row's next byte of ``texts``: decoding with known boundaries."""
    rows = [iter(text) for text in texts]
    return lambda logits: torch.tensor([next(row) for row in rows])


def test_eager_steps_compute_only_the_rows_that_reached_a_level() -> None:
    model = small_aunet()
    calls = []
    model.trunk.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["layout"].rows), with_kwargs=True
    )
    prompts, texts = [b"one two", b"abcdefg"], [b"a b c d e f g h", b"xxxxxxxxxxxxxxx"]
    eager = decode(model, prompts, 14, choose=replay(texts), keep_logits=True, step_mode="eager")
    steps = calls[1:]  # the first call is the prefill
    assert steps and all(rows is not None and rows.tolist() == [0] for rows in steps), steps
    calls.clear()
    static = decode(model, prompts, 14, choose=replay(texts), keep_logits=True, step_mode="static")
    assert len(calls) == len(steps) + 1 and all(rows is None for rows in calls)
    for row in range(2):
        for a, b in zip(eager.logits[row], static.logits[row]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_eager_steps_read_the_longest_rows_slots_and_no_more() -> None:
    # Row 1's prompt has 8 words and gets no more; row 0 gets a word at every other byte, so the
    # trunk runs at every other step for row 0 alone. It must read the slots of the longest row
    # (row 1's 8 words, then row 0's once it passes them), not one more slot per step it ran.
    model = small_aunet()
    reads = []
    model.trunk.register_forward_pre_hook(
        lambda module, args, kwargs: reads.append((kwargs["cache"].used, kwargs["cache"].length.tolist())),
        with_kwargs=True,
    )
    prompts, texts = [b"one", b"a b c d e f g"], [b"a b c d e f g h i j k l m n", b"x" * 30]
    run = decode(model, prompts, 24, choose=replay(texts), step_mode="eager")
    steps = reads[1:]  # the first call is the prefill
    assert len(steps) == run.stage_calls[1] > 8
    assert steps[0][1][0] < steps[0][1][1] < steps[-1][1][0], steps  # row 0 passes row 1 on the way
    # Slots read before each step: the spare and the longest row's (the step adds its own slot).
    assert [used for used, _ in steps] == [1 + max(lengths) for _, lengths in steps], steps


def test_steps_skip_autograd_bookkeeping_and_return_logits_callers_may_change() -> None:
    # Prefills and steps run under inference mode (no version counters or view records on the
    # dozens of small tensors a step makes); what they return is an ordinary tensor.
    model = small_aunet()
    state = new_state(model, 2, 64)
    tokens = torch.tensor([[BOS, 73, 110, 32], [BOS, 84, 104, 101]])
    levels = torch.tensor([[1, 0, 0, 1], [1, 0, 0, 0]], dtype=torch.uint8)
    first = prefill(model, state, tokens, levels, torch.tensor([4, 4]))
    seen = []
    model.trunk.register_forward_pre_hook(lambda module, args: seen.append(torch.is_inference_mode_enabled()))
    logits = step(model, state, torch.tensor([97, 32]), [0, 1], [True, True])
    assert seen == [True]
    assert all(cache.k[0].is_inference() for cache in state.caches.values() if cache is not None)
    for out in (first, logits):
        assert not out.is_inference()
        out[:, 0] = float("-inf")  # an inference tensor refuses this outside inference mode


def test_a_model_sharded_with_fsdp_decodes_before_any_forward(tmp_path: Path) -> None:
    # FSDP keeps its parameters' version counters across an unshard, and parameters it first
    # gathers under inference mode have none: a sharded model decodes under no_grad (a sampler
    # that generates before any evaluation, or a user's script, gathers them first in a step).
    import torch.distributed as dist

    from aunet.jobs.config import Parallel
    from aunet.jobs.runtime.distributed import World, parallelize

    if not dist.is_available():
        pytest.skip("this torch build has no torch.distributed")
    model = small_aunet()
    alone = decode(model, [b"one two"], 8, choose=greedy).new_bytes
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        sharded = parallelize(model, World(parallel=Parallel.FSDP), bfloat16=False, device=torch.device("cpu"))
        sharded.unshard()
        try:
            assert decode(sharded, [b"one two"], 8, choose=greedy).new_bytes == alone
        finally:
            sharded.reshard()
    finally:
        dist.destroy_process_group()


def test_rows_that_attend_row_by_row_get_what_gathered_rows_get(monkeypatch: pytest.MonkeyPatch) -> None:
    from aunet.core import modules

    model = small_aunet()
    prompts, texts = [b"one two", b"abcdefg", b"xyz"], [b"a b c d e f g h", b"xxxxxxxxxxxxxxx", b"z y x w v u t s"]
    gathered = decode(model, prompts, 14, choose=replay(texts), keep_logits=True, step_mode="eager")
    rows = []
    row = modules.KVCache.row
    monkeypatch.setattr(modules.KVCache, "row", lambda self, layer, r: rows.append(r) or row(self, layer, r))
    monkeypatch.setattr(modules, "ROW_BY_ROW_BYTES", 0)  # every cache long enough
    by_row = decode(model, prompts, 14, choose=replay(texts), keep_logits=True, step_mode="eager")
    assert rows and set(rows) == {0, 2}, rows  # the trunk's steps of some rows (row 1 gets no word)
    for r in range(3):
        for a, b in zip(gathered.logits[r], by_row.logits[r]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_an_upsampler_that_prepares_does_so_once_per_coarse_position(mode: str) -> None:
    model = small_aunet()
    up = model.upsamplers[0]
    prepared, forwards = [], []
    kind = type(up)
    up.prepare = lambda coarse: prepared.append(coarse.shape[0]) or kind.prepare(up, coarse)
    up.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[0]))
    prompts, texts = [b"one two", b"abcdefg"], [b"a b c d e f g h", b"xxxxxxxxxxxxxxx"]
    run = decode(model, prompts, 14, choose=replay(texts), step_mode=mode)
    # The prefill upsamples its positions through forward and prepares each row's last coarse
    # vector; then every step picks, and only steps that reach the trunk prepare again, in eager
    # mode for the rows that reached it alone (row 0, whose text has a space every other byte).
    assert forwards == [2] and prepared[0] == 2
    assert len(prepared) - 1 == run.stage_calls[1] > 0
    assert all(rows == (1 if mode == "eager" else 2) for rows in prepared[1:]), prepared


def test_compiled_steps_match_eager_within_the_stated_tolerance() -> None:
    model = small_aunet()
    # Three prompts on two rows: the third takes a finished row's place (spliced into a state
    # whose steps are compiled, from one prefilled apart, whose are not).
    prompts = [b"In the beginning God created the heaven", b"and the earth", b"And God said"]
    eager = decode(model, prompts, 24, choose=greedy, keep_logits=True, step_mode="eager", batch_size=2)
    compiled = decode(model, prompts, 24, choose=greedy, keep_logits=True, step_mode="compiled", batch_size=2)
    assert compiled.stage_calls[-1] > 0, "no compiled step reached the trunk"
    assert compiled.new_bytes == eager.new_bytes
    for row in range(len(prompts)):
        for a, b in zip(compiled.logits[row], eager.logits[row]):
            torch.testing.assert_close(a, b, rtol=COMPILED_TOLERANCE, atol=COMPILED_TOLERANCE)


@given(st.integers(min_value=1, max_value=1 << 16), st.integers(min_value=1, max_value=1 << 16))
def test_a_compiled_step_reads_at_most_a_quarter_more_slots_than_are_used(positions: int, capacity: int) -> None:
    read = read_bucket(positions, capacity)
    assert read == capacity if positions >= capacity else positions <= read <= max(64, positions * 5 // 4)


def test_compiled_steps_read_at_most_four_buckets_per_doubling() -> None:
    # 64 slots, then four buckets for each doubling up to 4,096: few graphs over a context.
    assert len({read_bucket(n, 1 << 16) for n in range(1, 1 << 12)}) == 1 + 4 * 6


def graphs_made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """Compiled steps' tensor work run uncompiled, recording what each graph would be made for:
    (top, reads, rows). The bucketing is the host's; compiled code itself is held to eager below."""
    from aunet.core import decoding

    made = []
    monkeypatch.setattr(
        decoding,
        "compiled_advance",
        lambda model, batch, top, reads, rows: made.append((top, reads, rows)) or decoding._advance,
    )
    return made


def test_compiled_steps_read_a_bucket_of_the_used_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    made = graphs_made(monkeypatch)
    torch.manual_seed(0)
    model = build_model(
        aunet.parse_spec(
            "[model]\ncontext = 128\n"
            '[[levels]]\ndim = 32\nstage = { kind = "transformer", layers = 1, head_dim = 16 }\n'
            '[[levels]]\ndim = 64\nsplitter = "whitespace"\nstage = { kind = "transformer", layers = 1, head_dim = 16 }'
        )
    ).eval()
    prompts, texts = (
        [b"one two three four five six seven eight nine ten eleven", b"abc"],
        [b"a b c d e f g h i j k l m"] * 2,
    )
    run = decode(model, prompts, 20, choose=replay(texts), keep_logits=True, step_mode="compiled")
    eager = decode(model, prompts, 20, choose=replay(texts), keep_logits=True, step_mode="eager")
    for row in range(2):
        for a, b in zip(run.logits[row], eager.logits[row], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Level 0's stages (an encoder and a decoder, the first two reads) read the spare and a bucket
    # of the longest row's positions once the step's are in: BOS and 55 bytes, then one per step
    # (19 steps: the prefill's logits chose the first byte).
    longest = len(prompts[0]) + 1
    assert [reads[:2] for _, reads, _ in made] == [(read_bucket(longest + t + 1, 128) - 1,) * 2 for t in range(19)]
    assert {reads[0] for _, reads, _ in made} == {63, 79}  # 64 slots, then 80 from the 64th position on
    # Steps that reach the trunk read its bucket too (its capacity, 128 words, is never reached).
    assert {reads[2:] for top, reads, _ in made if top == 1} == {(63,)}
    assert run.stage_calls[1] > 0


def test_compiled_steps_run_a_level_on_a_bucket_of_rows_and_keep_only_the_rows_that_reached_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = graphs_made(monkeypatch)
    model = small_aunet()
    trunk = []
    model.trunk.register_forward_pre_hook(
        lambda module, args, kwargs: trunk.append((kwargs["layout"].rows, kwargs["layout"].valid[:, 0].clone())),
        with_kwargs=True,
    )
    # A compiled graph gathers a bucket's cached keys (a loop over rows would break it), and its
    # shapes run uncompiled gather too, even where eager steps would attend row by row.
    from aunet.core import modules

    by_row = []
    row = modules.KVCache.row
    monkeypatch.setattr(modules.KVCache, "row", lambda self, layer, r: by_row.append(r) or row(self, layer, r))
    monkeypatch.setattr(modules, "ROW_BY_ROW_BYTES", 0)
    prompts = [b"one two", b"abcdefg", b"x", b"a b", b"the end"]
    texts = [b"a b c d e f g h", b"xxxxxxxxxxxxxxx", b"ab cd ef gh ij k", b"zzzzzzzzzzzzzzzz", b"q r s t u v w x"]
    run = decode(model, prompts, 14, choose=replay(texts), keep_logits=True, step_mode="compiled")
    assert not by_row
    eager = decode(model, prompts, 14, choose=replay(texts), keep_logits=True, step_mode="eager")
    assert by_row  # the same steps, eager: row by row
    for row in range(len(prompts)):
        for a, b in zip(run.logits[row], eager.logits[row], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    steps = trunk[1 : 1 + run.stage_calls[1]]  # the first call is the prefill
    assert steps and {rows.shape[0] for rows, _ in steps if rows is not None} >= {1, 2, 4}, steps
    for rows, reached in steps:
        count = int(reached.sum())
        if rows is None:  # a bucket of 8 would be every row of 5
            assert count > 4
            continue
        assert rows.shape[0] == 1 << (count - 1).bit_length(), (rows, reached)  # the next power of two
        assert set(reached.nonzero()[:, 0].tolist()) <= set(rows.tolist()) and rows.tolist() == sorted(rows.tolist())
    assert all(rows[0] == -1 for _, _, rows in made)  # level 0: every row


def test_compiled_steps_of_a_routed_model_keep_static_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The walk reads a router's decision on the host, which breaks a compiled graph; the frames
    # after the break are shared by every graph, so buckets would reach torch's recompile limit.
    made = graphs_made(monkeypatch)
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path("hnet-tiny"))).eval()
    prompts = [b"In the beginning God created", b"and the earth"]
    run = decode(model, prompts, 12, choose=greedy, keep_logits=True, step_mode="compiled")
    static = decode(model, prompts, 12, choose=greedy, keep_logits=True, step_mode="static")
    assert made and all(reads == () and set(rows) == {-1} for _, reads, rows in made), made
    for row in range(2):
        for a, b in zip(run.logits[row], static.logits[row], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_steps_keep_plain_tensors_and_the_others_inference_tensors() -> None:
    # Inference mode saves a compiled step nothing, and inference tensors in captured CUDA graphs
    # are a known source of torch failures: a compiled state is made and changed under no_grad.
    model = small_aunet()
    tokens, levels = torch.tensor([[BOS, 65, 32, 66]]), torch.tensor([[2, 0, 1, 0]])
    for mode, inference in ((StepMode.EAGER, True), (StepMode.STATIC, True), (StepMode.COMPILED, False)):
        state = new_state(model, 1, 32, mode=mode)
        logits = prefill(model, state, tokens, levels, torch.tensor([4]))
        cache = state.caches[(0, Part.ENCODER)]
        assert cache.k[0].is_inference() is inference and state.count[0].is_inference() is inference, mode
        assert not logits.is_inference()  # what a caller gets is ordinary either way
    # The state by name, and a caller's own inference mode, change nothing.
    with torch.inference_mode():
        state = new_state(model, 1, 32, mode=StepMode.COMPILED)
    prefill(model, state=state, tokens=tokens, levels=levels, lengths=torch.tensor([4]))
    assert not state.caches[(0, Part.ENCODER)].k[0].is_inference() and not state.count[0].is_inference()


def test_an_unknown_step_mode_is_named() -> None:
    model = small_aunet()
    with pytest.raises(ValueError, match="step_mode must be one of eager, static, compiled, got 'fast'"):
        aunet.generate(model, [b"x"], 2, step_mode="fast")


@pytest.mark.parametrize("name", ["aunet2-tiny", "hnet-tiny"])
def test_static_and_eager_steps_give_the_same_bytes_on_shipped_specs(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path(name))).eval()
    prompts = [b"In the beginning", b"", b"And God said, Let there be light"]
    eager = aunet.generate(model, prompts, 30, step_mode="eager")
    assert aunet.generate(model, prompts, 30, step_mode="static") == eager


def test_the_upsamplers_kept_weights_follow_every_change_of_its_parameters() -> None:
    from aunet.plugins.nn.upsamplers import MultiLinearUpsampler

    torch.manual_seed(0)
    up = MultiLinearUpsampler(dim_coarse=8, dim_fine=4, offsets=4, wrap=True, norm_eps=1e-5, init_std=0.1)
    coarse, segment, offset = torch.randn(2, 3, 8), torch.tensor([[0, 0, 1, 1, 2, 2]] * 2), torch.arange(6).repeat(2, 1)

    def fresh() -> torch.Tensor:
        with torch.enable_grad():  # recorded: nothing kept, built from the weights as they are
            return up(coarse, segment, offset).detach()

    with torch.no_grad():
        first = up(coarse, segment, offset)
        assert torch.equal(first, fresh()) and up._combined is not None
        up.per_offset.add_(1.0)  # an optimizer step, in place
        changed = up(coarse, segment, offset)
        assert not torch.equal(changed, first) and torch.equal(changed, fresh())
        up.load_state_dict({"up": torch.zeros(8, 4), "per_offset": up.per_offset, "norm.weight": up.norm.weight})
        assert torch.equal(up(coarse, segment, offset), fresh())


@pytest.mark.parametrize(("mode", "stop"), [("eager", b"e"), ("static", b"e"), ("eager", b""), ("static", b"")])
def test_a_finished_row_takes_the_next_prompt_and_every_prompt_decodes_as_alone(
    mode: str, stop: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aunet.jobs.inference import generate

    prefills = []

    def counted(model, state, tokens, *args, **kwargs):
        prefills.append(tokens.shape[0])
        return prefill(model, state, tokens, *args, **kwargs)

    monkeypatch.setattr(generate, "prefill", counted)
    model = small_aunet()
    prompts = [b"In the beginning", b"", b"And God said", b"a b c d e f", b"x" * 40, b"The earth was"]
    # With a stop sequence rows end at different steps, each freeing its row for the next prompt;
    # without, both rows end together and the next two prompts are prefilled as one batch.
    stop = [stop]
    options = {"choose": greedy, "keep_logits": True, "stop": stop, "step_mode": mode, "prefill_chunk": 0}
    together = decode(model, prompts, 12, batch_size=2, **options)
    assert sum(prefills) == len(prompts) and prefills[0] == 2
    if stop == [b""]:
        assert prefills == [2, 2, 2], prefills
    for i, prompt in enumerate(prompts):
        alone = decode(model, [prompt], 12, **options)
        assert together.new_bytes[i] == alone.new_bytes[0], i
        for a, b in zip(together.logits[i], alone.logits[0], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Two rows decoded six prompts: fewer steps than six one after another.
    assert together.stage_calls[0] < sum(len(logits) for logits in together.logits)


def test_continuous_batching_streams_bytes_under_each_prompts_index() -> None:
    model = small_aunet()
    prompts = [b"one", b"two", b"three"]
    seen: dict[int, bytearray] = {}
    result = decode(
        model,
        prompts,
        6,
        choose=greedy,
        batch_size=1,
        on_bytes=lambda i, b: seen.setdefault(i, bytearray()).extend(b),
    )
    assert {i: bytes(b) for i, b in seen.items()} == {i: b for i, b in enumerate(result.new_bytes) if b}


def test_no_prompts_decode_to_nothing_and_a_batch_of_no_rows_is_named() -> None:
    model = small_aunet()
    assert aunet.generate(model, [], 5) == []
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        aunet.generate(model, [b"x"], 5, batch_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none (CPU-only torch or no GPU)"
)
def test_cuda_graph_steps_match_eager_ones_on_the_gpu() -> None:
    model = small_aunet().to("cuda")
    prompts = [b"In the beginning God created the heaven", b"and the earth", b""]
    eager = decode(model, prompts, 24, choose=greedy, keep_logits=True, step_mode="eager")
    graphs = decode(model, prompts, 24, choose=greedy, keep_logits=True, step_mode="compiled", batch_size=2)
    assert graphs.new_bytes == eager.new_bytes
    for row in range(len(prompts)):
        for a, b in zip(graphs.logits[row], eager.logits[row], strict=True):
            torch.testing.assert_close(a, b, rtol=COMPILED_TOLERANCE, atol=COMPILED_TOLERANCE)
    skips = torch._dynamo.utils.counters["inductor"].get("cudagraph_skips", {})
    assert not skips, f"CUDA graphs were skipped: {dict(skips)}"
