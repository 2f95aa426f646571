"""Conformance kits for the model's plugin families: ``check_pooler``, ``check_upsampler``,
``check_stage`` and ``check_attention``. Each takes a spec instance of its family (built-in or
third-party, registered or not), builds the component through its own ``build``/``resolve``,
and checks with hypothesis every invariant the assembler relies on, then the component inside
whole models (``small_specs`` drawing it at every level): the model stays causal and cached
generation equals teacher forcing. A failure is an AssertionError that names the component and
the invariant, with hypothesis's falsifying example. Needs ``hypothesis`` (the ``test`` extra).

Invariants (the contracts of ``aunet.core.modules``):

* **causality at the component's own level**: a pooled vector depends on no position after its
  segment's boundary; an upsampled position on no coarse vector but its own segment's; a stage's
  or attention's output at position j on nothing after j, nor on another document of the row;
* **batch independence**: rows never mix (changing one row changes no other, bit for bit);
* **shapes and dtypes** as the contract states, in float32 and bfloat16; **gradients** reach every
  parameter;
* **incremental use equals the full forward**: a pooler's ``step`` and the upsampler's one-position
  form, a stage through its KV cache, a backend with a dense mask over a cache;
* **inside a whole model**: causal, and generation equal to teacher forcing.

Every kit shrinks a failing example to a small one before reporting it (hypothesis's shrinking);
``shrink=False`` reports the first one found, sooner. Whether a kit finds a broken component
does not depend on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

#: Widths the kits build components at (small: the checks are about structure, not size).
DIM_FINE, DIM_COARSE = 8, 12
#: Examples per property (component-level, model-level) unless the caller asks otherwise.
EXAMPLES, MODEL_EXAMPLES = 30, 8


@contextlib.contextmanager
def _invariant(component: str, name: str) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{component}: {name}: {exc}") from None


def _run(test: Callable[..., None], examples: int, *, shrink: bool = True) -> None:
    """Run a property with one error reported (the first invariant broken, shrunk to a small
    example unless ``shrink`` is off)."""
    from hypothesis import HealthCheck, Phase, settings

    phases = list(Phase) if shrink else [p for p in Phase if p is not Phase.shrink]
    settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        report_multiple_bugs=False,
        phases=phases,
    )(test)()


def _name(family: str, spec: Any) -> str:
    return f"{family} '{getattr(spec, 'kind', type(spec).__name__)}'"


def _rows() -> Any:
    """(B, T) boundary masks (column 0 always a boundary) and a static capacity (or None)."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw: Any) -> Any:
        import torch

        b, t = draw(st.integers(1, 3)), draw(st.integers(1, 24))
        bits = draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))
        mask = torch.tensor(bits, dtype=torch.bool).view(b, t)
        mask[:, 0] = True
        capacity = draw(st.one_of(st.none(), st.integers(1, t + 2)))
        return mask, capacity, draw(st.integers(0, 2**31 - 1))

    return draw()


def _grads(module: Any, loss: Any, **inputs: Any) -> None:
    """Backpropagate ``loss``; AssertionError naming every trainable parameter of ``module``, and
    every one of ``inputs`` (name: tensor), that gets no gradient."""
    loss.backward()
    missing = [
        n
        for n, p in module.named_parameters()
        if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))
    ]
    missing += [f"the {name} input" for name, x in inputs.items() if x.grad is None]
    assert not missing, f"no gradient reaches {missing}"


def _models(component: str, examples: int, *, shrink: bool = True, **fixed: Any) -> None:
    """The component inside whole models: causal, and generation equal to teacher forcing."""
    import torch
    from hypothesis import given
    from hypothesis import strategies as st

    from aunet.core.model import build_model
    from aunet.testing.models import assert_causal, assert_matches_teacher_forcing, documents, small_specs

    length = 40

    @given(
        spec=small_specs(max_depth=2, context=128, **fixed),
        docs=documents(),
        new=st.binary(min_size=length, max_size=length),
        t=st.integers(0, length - 2),
        prompts=st.lists(
            st.binary(max_size=24) | st.text(alphabet="ab c.\\n", max_size=24).map(str.encode), min_size=1, max_size=2
        ),
    )
    def in_models(spec: Any, docs: Any, new: bytes, t: int, prompts: list[bytes]) -> None:
        torch.manual_seed(0)
        model = build_model(spec).eval()
        with _invariant(component, "inside a model: causality"):
            assert_causal(model, docs, new, t, length)
        with _invariant(component, "inside a model: generation equals teacher forcing"):
            assert_matches_teacher_forcing(model, prompts, 12)

    _run(in_models, examples, shrink=shrink)


# -- poolers -----------------------------------------------------------------------------------


def check_pooler(
    spec: Any, *, examples: int = EXAMPLES, model_examples: int = MODEL_EXAMPLES, shrink: bool = True
) -> None:
    """Check a pooler spec against the contract of ``aunet.core.Pooler``.

    Quick start for a pooler author::

        from aunet.testing import check_pooler
        check_pooler(MyPoolerSpec())        # in a test of your package: passes, or says what breaks

    It builds ``spec.build(dim_in=8, dim_out=12)`` and checks, on random rows of random
    boundaries: the output is (B, S, 12) in the input's dtype (float32 and bfloat16); the vector
    of segment s depends on that segment's positions only (nothing after its boundary, no other
    segment, no other row), so changing anything else changes it not at all; gradients reach
    every parameter; ``step`` fed one position at a time gives what ``forward`` gives; and models
    pooling with it at every level are causal and generate what they teacher-force.
    """
    import torch
    from hypothesis import given

    from aunet.core.model import boundary_index

    component = _name("pooler", spec)

    @given(rows=_rows())
    def contract(rows: Any) -> None:
        mask, capacity, seed = rows
        torch.manual_seed(seed % 1000)
        pooler = spec.build(dim_in=DIM_FINE, dim_out=DIM_COARSE)
        level = boundary_index(mask, capacity)
        b, t = mask.shape
        s = level.index.shape[1]
        x = torch.randn(b, t, DIM_FINE, requires_grad=True)
        out = pooler(x, level)
        valid = level.valid
        with _invariant(component, "shape and dtype"):
            assert out.shape == (b, s, DIM_COARSE) and out.dtype == x.dtype, f"{tuple(out.shape)} {out.dtype}"
            half = spec.build(dim_in=DIM_FINE, dim_out=DIM_COARSE).to(torch.bfloat16)
            low = half(x.detach().to(torch.bfloat16), level)
            assert low.dtype == torch.bfloat16 and bool(torch.isfinite(low).all()), f"bfloat16 gave {low.dtype}"
        with _invariant(component, "causality (a segment's vector depends on no later position)"):
            for row in range(b):
                for slot in range(s):
                    if not bool(valid[row, slot]):
                        continue
                    end = int(level.index[row, slot])
                    changed = x.detach().clone()
                    changed[row, end + 1 :] += torch.randn_like(changed[row, end + 1 :]) * 3
                    first = (level.members[row] == slot).nonzero()
                    start = int(first[0]) if len(first) else end
                    changed[row, :start] += torch.randn_like(changed[row, :start]) * 3  # earlier segments too
                    again = pooler(changed, level)
                    assert torch.equal(again[row, slot], out.detach()[row, slot]), (
                        f"row {row}, segment {slot} (positions {start}..{end}) changed when positions outside it did"
                    )
        with _invariant(component, "batch independence (rows never mix)"):
            if b > 1:
                other = x.detach().clone()
                other[1:] = torch.randn_like(other[1:])
                assert torch.equal(pooler(other, level)[0], out.detach()[0]), "row 0 changed when rows 1.. did"
        with _invariant(component, "step (decoding) equals forward"):
            state = pooler.initial_state(batch=b, device=x.device, dtype=x.dtype)
            kept = torch.zeros(b, t, dtype=torch.bool)
            for row in range(b):
                kept[row, level.index[row][valid[row]]] = True
            with torch.no_grad():
                expected = pooler(x.detach(), level)
                for j in range(t):
                    active = level.members[:, j] < s  # positions of no kept segment are never decoded
                    got, state = pooler.step(x.detach()[:, j : j + 1], state, active=active, boundary=kept[:, j])
                    for row in range(b):
                        if bool(kept[row, j]):
                            slot = int(level.members[row, j])
                            torch.testing.assert_close(got[row, 0], expected[row, slot], rtol=1e-5, atol=1e-5)

    _run(contract, examples, shrink=shrink)
    with _invariant(component, "gradients reach every parameter"):
        # On segments of several positions (a softmax over one position has no gradient).
        torch.manual_seed(0)
        pooler = spec.build(dim_in=DIM_FINE, dim_out=DIM_COARSE)
        mask = torch.zeros(2, 16, dtype=torch.bool)
        mask[:, ::4] = True
        level = boundary_index(mask, None)
        _grads(pooler, pooler(torch.randn(2, 16, DIM_FINE), level).square().sum())
    if model_examples:
        _models(component, model_examples, shrink=shrink, pooler=spec)


# -- upsamplers ----------------------------------------------------------------------------------


def check_upsampler(
    spec: Any, *, examples: int = EXAMPLES, model_examples: int = MODEL_EXAMPLES, shrink: bool = True
) -> None:
    """Check an upsampler spec against the contract of ``aunet.core.Upsampler``.

    Quick start for an upsampler author::

        from aunet.testing import check_upsampler
        check_upsampler(MyUpsamplerSpec())

    It builds ``spec.build(dim_coarse=12, dim_fine=8)`` and checks, on random rows of random
    boundaries: the output is (B, T, 8) in the input's dtype (float32 and bfloat16); fine position
    j depends on the coarse vector of its own segment (``segment[j]``, the last boundary at or
    before j) and its offset only, never on a later coarse vector or another row; gradients reach
    every parameter and the coarse input; the one-position form decoding uses (the segment's
    vector alone, segment 0, the offset) gives what the full forward gives, and so does ``pick``
    of what ``prepare`` keeps from that vector, where it keeps something; and models expanding
    with it at every level are causal and generate what they teacher-force.
    """
    import torch
    from hypothesis import given

    from aunet.core.model import boundary_index

    component = _name("upsampler", spec)

    @given(rows=_rows())
    def contract(rows: Any) -> None:
        mask, capacity, seed = rows
        torch.manual_seed(seed % 1000)
        up = spec.build(dim_coarse=DIM_COARSE, dim_fine=DIM_FINE)
        level = boundary_index(mask, capacity)
        b, t = mask.shape
        s = level.index.shape[1]
        coarse = torch.randn(b, s, DIM_COARSE, requires_grad=True)
        out = up(coarse, level.segment, level.offset)
        with _invariant(component, "shape and dtype"):
            assert out.shape == (b, t, DIM_FINE) and out.dtype == coarse.dtype, f"{tuple(out.shape)} {out.dtype}"
            half = spec.build(dim_coarse=DIM_COARSE, dim_fine=DIM_FINE).to(torch.bfloat16)
            low = half(coarse.detach().to(torch.bfloat16), level.segment, level.offset)
            assert low.dtype == torch.bfloat16 and bool(torch.isfinite(low).all()), f"bfloat16 gave {low.dtype}"
        with _invariant(component, "causality (a position sees its own segment's vector only)"):
            for slot in range(s):
                changed = coarse.detach().clone()
                changed[:, slot] += torch.randn_like(changed[:, slot]) * 3
                again = up(changed, level.segment, level.offset)
                untouched = level.segment != slot  # (B, T)
                assert torch.equal(again[untouched], out.detach()[untouched]), (
                    f"positions of other segments changed when coarse vector {slot} did"
                )
        with _invariant(component, "batch independence (rows never mix)"):
            if b > 1:
                other = coarse.detach().clone()
                other[1:] = torch.randn_like(other[1:])
                assert torch.equal(up(other, level.segment, level.offset)[0], out.detach()[0]), "row 0 changed"
        with _invariant(component, "gradients reach every parameter"):
            _grads(up, out.square().sum(), coarse=coarse)
        with _invariant(component, "the one-position form (decoding) equals forward"):
            zero = torch.zeros(b, 1, dtype=torch.long)
            with torch.no_grad():
                for j in range(t):
                    own = torch.gather(coarse.detach(), 1, level.segment[:, j, None, None].expand(-1, 1, DIM_COARSE))
                    got = up(own, zero, level.offset[:, j : j + 1])
                    torch.testing.assert_close(got[:, 0], out.detach()[:, j], rtol=1e-5, atol=1e-5)
        picked = "what it prepares, picked at an offset, equals the one-position form"
        with _invariant(component, picked), torch.no_grad():
            for j in range(t):
                own = torch.gather(coarse.detach(), 1, level.segment[:, j, None, None].expand(-1, 1, DIM_COARSE))
                prepared = up.prepare(own)
                if prepared is None:  # it prepares nothing: decoding calls forward
                    break
                assert prepared.shape[0] == b, f"prepare gave {tuple(prepared.shape)} for {b} rows"
                # Decoding overwrites rows of what it keeps: it must own its memory, row by row.
                weights = {p.untyped_storage().data_ptr() for p in up.parameters()}
                expanded = any(st == 0 and n > 1 for st, n in zip(prepared.stride(), prepared.shape))
                assert prepared.untyped_storage().data_ptr() not in weights and not expanded, (
                    "prepare returned a view of a parameter or an expanded tensor: decoding writes into it"
                )
                offsets = level.offset[:, j : j + 1]
                got = up.pick(prepared, offsets)
                torch.testing.assert_close(got, up(own, zero, offsets), rtol=1e-5, atol=1e-5)

    _run(contract, examples, shrink=shrink)
    if model_examples:
        _models(component, model_examples, shrink=shrink, upsampler=spec)


# -- stages and attention -------------------------------------------------------------------------


def _stage_dim(spec: Any) -> int:
    for dim in (16, 24, 32, 64):
        if not spec.check(path="", dim=dim):
            return dim
    raise AssertionError(f"{_name('stage', spec)}: no width of 16, 24, 32 or 64 passes its check()")


def _layouts() -> Any:
    from hypothesis import strategies as st

    @st.composite
    def draw(draw: Any) -> Any:
        import torch

        b, t = draw(st.integers(1, 3)), draw(st.integers(1, 20))
        starts = draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))
        doc = torch.tensor(starts).view(b, t).long().cumsum(1) if draw(st.booleans()) else None
        return b, t, doc, draw(st.integers(0, 2**31 - 1))

    return draw()


def check_stage(
    spec: Any, *, examples: int = EXAMPLES, model_examples: int = MODEL_EXAMPLES, shrink: bool = True
) -> None:
    """Check a stage spec against the contract of ``aunet.core.Stage``.

    Quick start for a stage author::

        from aunet.testing import check_stage
        check_stage(MyStageSpec(layers=2))

    It builds ``spec.build(dim=D)`` on the CPU (D the first of 16, 24, 32, 64 its ``check`` allows)
    and checks, on random rows with random documents: the output is (B, S, D) in the input's dtype
    (float32 and bfloat16); position j depends on nothing after j, nor on another document of its
    row, nor on another row; gradients reach every parameter; feeding the positions through its
    KV cache one at a time (and a prefill of the first half) gives the full forward's output; and
    models with it at every level are causal and generate what they teacher-force.
    """
    import torch
    from hypothesis import given

    from aunet.core.modules import Layout

    component = _name("stage", spec)
    dim = _stage_dim(spec)

    @given(case=_layouts())
    def contract(case: Any) -> None:
        b, t, doc, seed = case
        torch.manual_seed(seed % 1000)
        stage = spec.build(dim=dim, device=torch.device("cpu"))
        x = torch.randn(b, t, dim, requires_grad=True)
        out = stage(x, layout=Layout(doc=doc))
        with _invariant(component, "shape and dtype"):
            assert out.shape == (b, t, dim) and out.dtype == x.dtype, f"{tuple(out.shape)} {out.dtype}"
            low = spec.build(dim=dim, device=torch.device("cpu")).to(torch.bfloat16)(
                x.detach().to(torch.bfloat16), layout=Layout(doc=doc)
            )
            assert low.dtype == torch.bfloat16 and bool(torch.isfinite(low).all()), f"bfloat16 gave {low.dtype}"
        with _invariant(component, "causality (position j depends on nothing after j)"):
            for j in range(t - 1):
                changed = x.detach().clone()
                changed[:, j + 1 :] += torch.randn_like(changed[:, j + 1 :]) * 3
                again = stage(changed, layout=Layout(doc=doc))
                assert torch.equal(again[:, : j + 1], out.detach()[:, : j + 1]), f"an output at or before {j} changed"
        with _invariant(component, "documents (attention never crosses a document)"):
            if doc is not None:
                first = doc == doc[:, :1]  # the positions of each row's first document
                changed = x.detach().clone()
                changed[first] += torch.randn_like(changed[first]) * 3
                again = stage(changed, layout=Layout(doc=doc))
                assert torch.equal(again[~first], out.detach()[~first]), "later documents saw the first"
        with _invariant(component, "batch independence (rows never mix)"):
            if b > 1:
                other = x.detach().clone()
                other[1:] = torch.randn_like(other[1:])
                assert torch.equal(stage(other, layout=Layout(doc=doc))[0], out.detach()[0]), "row 0 changed"
        with _invariant(component, "gradients reach every parameter"):
            _grads(stage, out.square().sum())
        with _invariant(component, "the KV cache (decoding) equals forward"):
            if doc is None:  # decoding holds one document per row
                with torch.no_grad():
                    full = stage(x.detach(), layout=Layout())
                    cache = stage.new_cache(batch=b, capacity=t, device=x.device, dtype=x.dtype)
                    half = t // 2
                    parts = []
                    if half:
                        parts.append(
                            stage(
                                x.detach()[:, :half],
                                layout=Layout(valid=torch.ones(b, half, dtype=torch.bool)),
                                cache=cache,
                            )
                        )
                    for j in range(half, t):
                        parts.append(
                            stage(
                                x.detach()[:, j : j + 1],
                                layout=Layout(valid=torch.ones(b, 1, dtype=torch.bool)),
                                cache=cache,
                            )
                        )
                    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)

    _run(contract, examples, shrink=shrink)
    if model_examples:
        _models(component, model_examples, shrink=shrink, stage=spec)


def check_attention(
    spec: Any, *, examples: int = EXAMPLES, model_examples: int = MODEL_EXAMPLES, shrink: bool = True
) -> None:
    """Check an attention backend spec against the contract of ``aunet.core.AttentionBackend``.

    Quick start for a backend author::

        from aunet.testing import check_attention
        check_attention(MyAttentionSpec())

    It resolves the backend for the CPU and checks, on random (B, H, S, K) inputs with random
    documents and windows: its own plan gives the output of plain float32 softmax attention under
    the masking rule (within 1e-5), so position j depends on nothing after j, nothing outside its
    window and nothing of another document, bit for bit; rows never mix; bfloat16 inputs give
    bfloat16 outputs close to float32; a ``DensePlan`` (what decoding passes: one query against a
    cache) gives the same; and models attending with it at every stage are causal and generate
    what they teacher-force. A backend that cannot run on a CPU cannot be checked here.
    """
    import torch
    from hypothesis import given
    from hypothesis import strategies as st

    from aunet.core.modules import DensePlan, Layout, allowed

    component = _name("attention", spec)
    backend = spec.resolve(device=torch.device("cpu"))

    def oracle(q: Any, k: Any, v: Any, doc: Any, window: Any) -> Any:
        pos = torch.arange(q.shape[2])
        mask = (
            allowed(pos, pos, window, doc, doc)[:, None] if doc is not None else allowed(pos, pos, window)[None, None]
        )
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v, mask

    @given(case=_layouts(), window=st.one_of(st.none(), st.integers(1, 24)), heads=st.sampled_from([1, 2]))
    def contract(case: Any, window: Any, heads: int) -> None:
        b, t, doc, seed = case
        torch.manual_seed(seed % 1000)
        q, k, v = (torch.randn(b, heads, t, 8) for _ in range(3))
        layout = Layout(doc=doc)
        out = backend(q, k, v, backend.plan(layout, batch=b, length=t, window=window, device=q.device))
        expected, mask = oracle(q, k, v, doc, window)
        with _invariant(component, "shape and dtype"):
            assert out.shape == q.shape and out.dtype == q.dtype, f"{tuple(out.shape)} {out.dtype}"
        with _invariant(component, "the masking rule (causal, window, documents)"):
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
            for j in range(t):
                changed_k, changed_v = k.clone(), v.clone()
                hidden = ~mask.expand(b, 1, t, t)[:, 0, j]  # (B, S): keys query j must not see
                changed_k[hidden.unsqueeze(1).expand_as(k[..., 0])] += 3.0
                changed_v[hidden.unsqueeze(1).expand_as(v[..., 0])] += 3.0
                again = backend(
                    q, changed_k, changed_v, backend.plan(layout, batch=b, length=t, window=window, device=q.device)
                )
                assert torch.equal(again[:, :, j], out[:, :, j]), f"query {j} saw a key outside its rule"
        with _invariant(component, "batch independence (rows never mix)"):
            if b > 1:
                k2, v2 = k.clone(), v.clone()
                k2[1:], v2[1:] = torch.randn_like(k2[1:]), torch.randn_like(v2[1:])
                again = backend(q, k2, v2, backend.plan(layout, batch=b, length=t, window=window, device=q.device))
                assert torch.equal(again[0], out[0]), "row 0 changed when rows 1.. did"
        with _invariant(component, "bfloat16"):
            low = backend(
                q.bfloat16(),
                k.bfloat16(),
                v.bfloat16(),
                backend.plan(layout, batch=b, length=t, window=window, device=q.device),
            )
            assert low.dtype == torch.bfloat16
            torch.testing.assert_close(low.float(), expected, rtol=5e-2, atol=5e-2)
        with _invariant(component, "a dense mask (decoding) equals the rule"):
            last = backend(q[:, :, -1:], k, v, DensePlan(mask[..., -1:, :]))
            torch.testing.assert_close(last, expected[:, :, -1:], rtol=1e-5, atol=1e-5)

    _run(contract, examples, shrink=shrink)
    if model_examples:
        _models(component, model_examples, shrink=shrink, attention=(spec.kind,))
