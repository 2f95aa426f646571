"""The conformance kit of routers: ``check_router``. A router decides a level's boundaries from
the encoder output of the level below (``aunet.core.modules.Router``); what makes learned
boundaries dangerous is that a decision may quietly read the future, or another row, and that
decoding may decide differently from the forward it must equal. The kit checks, with hypothesis:

* **shapes and values**: ``prob`` (B, S) floating in [0, 1], ``boundary`` (B, S) bool, in
  float32 and bfloat16;
* **causality**: ``prob`` and ``boundary`` at positions <= t are unchanged, bit for bit, by any
  change after t;
* **batch independence**: changing rows 1.. changes nothing in row 0;
* **the decision rule**: a boundary's ``prob`` is at least 0.5 and a non-boundary's below it;
* **decoding equals the forward**: ``step`` fed one position at a time gives the forward's
  decisions, and so does ``step`` after ``state_after`` a prompt;
* **gradient through the estimator**: in a model routed by it, the next-byte loss alone (no
  router loss) reaches every parameter of the router;
* **inside whole models** (the router's parameters drawn at random, so that it cuts often):
  causal, and greedy cached generation equal to teacher forcing, at every level it may route.
"""

from __future__ import annotations

from typing import Any

from aunet.testing.kits import DIM_FINE, EXAMPLES, MODEL_EXAMPLES, _invariant, _name, _run

#: Probabilities this close to the 0.5 threshold may fall either side of it with float rounding:
#: decoding is not held to the forward's decision there.
THRESHOLD_SLACK = 1e-4


def _cases() -> Any:
    """(B, S) sequences: batch, length, document starts (or none) and a seed."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw: Any) -> Any:
        b, s = draw(st.integers(1, 3)), draw(st.integers(1, 24))
        starts = draw(st.one_of(st.none(), st.lists(st.integers(1, max(s - 1, 1)), max_size=3)))
        return b, s, starts, draw(st.integers(0, 2**31 - 1))

    return draw()


def scramble(router: Any, seed: int) -> None:
    """Draw a router's parameters at random (std fan_in ** -0.5), so that it cuts often: a freshly
    built router may cut rarely (the ``dynamic`` router starts as the identity)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in router.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * p.shape[-1] ** -0.5)


def check_router(
    spec: Any, *, examples: int = EXAMPLES, model_examples: int = MODEL_EXAMPLES, shrink: bool = True
) -> None:
    """Check a router spec against the contract of ``aunet.core.Router``.

    Quick start for a router author::

        from aunet.testing import check_router
        check_router(MyRouterSpec())        # in a test of your package: passes, or says what breaks

    It builds ``spec.build(dim=8)`` with random parameters and checks the invariants listed in
    this module's docstring; a failure is an AssertionError naming the router and the invariant.
    """
    import torch
    from hypothesis import given

    from aunet.core.modules import Layout
    from aunet.core.tokens import IGNORE

    component = _name("router", spec)

    @given(case=_cases())
    def contract(case: Any) -> None:
        b, s, starts, seed = case
        torch.manual_seed(seed % 1000)
        router = spec.build(dim=DIM_FINE)
        scramble(router, seed % 1000)
        x = torch.randn(b, s, DIM_FINE)
        doc = None
        if starts is not None:
            mark = torch.zeros(s, dtype=torch.long)
            mark[sorted({i for i in starts if i < s})] = 1
            doc = mark.cumsum(0).expand(b, s).contiguous()
        layout = Layout(doc=doc)
        with torch.no_grad():
            out = router(x, layout)
        prob, boundary = out.prob, out.boundary
        with _invariant(component, "shapes and values"):
            assert prob.shape == (b, s) and prob.dtype.is_floating_point, f"prob {tuple(prob.shape)} {prob.dtype}"
            assert boundary.shape == (b, s) and boundary.dtype == torch.bool, (
                f"boundary {tuple(boundary.shape)} {boundary.dtype}"
            )
            assert bool(((prob >= 0) & (prob <= 1)).all()), f"prob outside [0, 1]: {prob}"
            low = spec.build(dim=DIM_FINE)
            low.load_state_dict(router.state_dict())
            with torch.no_grad():
                half = low.to(torch.bfloat16)(x.to(torch.bfloat16), layout)
            assert half.prob.shape == (b, s) and bool(torch.isfinite(half.prob).all()), "bfloat16: not finite"
        with _invariant(component, "causality (a decision depends on no later position)"):
            for t in range(s - 1):
                changed = x.clone()
                changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 3
                with torch.no_grad():
                    again = router(changed, Layout(doc=doc))
                assert torch.equal(again.prob[:, : t + 1], prob[:, : t + 1]), (
                    f"prob at or before position {t} changed when later positions did"
                )
                assert torch.equal(again.boundary[:, : t + 1], boundary[:, : t + 1]), (
                    f"a boundary at or before position {t} changed when later positions did"
                )
        with _invariant(component, "batch independence (rows never mix)"):
            if b > 1:
                other = x.clone()
                other[1:] = torch.randn_like(other[1:])
                for docs in (doc, None) if doc is not None else (None,):  # a document start can hide a mix
                    with torch.no_grad():
                        before, again = router(x, Layout(doc=docs)), router(other, Layout(doc=docs))
                    assert torch.equal(again.prob[0], before.prob[0]), "row 0's prob changed when rows 1.. did"
                    assert torch.equal(again.boundary[0], before.boundary[0]), (
                        "row 0's boundaries changed with rows 1.."
                    )
        with _invariant(component, "the decision rule (a boundary where prob >= 0.5)"):
            assert torch.equal(boundary, prob >= 0.5), f"boundary {boundary} for prob {prob}"
        with _invariant(component, "step (decoding) equals forward"), torch.no_grad():
            whole = router(x, Layout())  # decoding holds one document per row
            state = router.initial_state(batch=b, device=x.device, dtype=x.dtype)
            active = torch.ones(b, dtype=torch.bool)
            for j in range(s):
                got, state = router.step(x[:, j : j + 1], state, active=active)
                _same_decision(got, whole, j, f"position {j} stepped from the start")
            cut = torch.randint(0, s, (b,))
            state = router.state_after(x, cut)
            rows = torch.arange(b)
            got, _ = router.step(x[rows, cut][:, None], state, active=active)
            for row in range(b):
                j = int(cut[row])
                single = type(got)(got.prob[row : row + 1], got.boundary[row : row + 1])
                ref = type(whole)(whole.prob[row : row + 1], whole.boundary[row : row + 1])
                _same_decision(single, ref, j, f"row {row}: position {j} after state_after({j})")

    _run(contract, examples, shrink=shrink)
    with _invariant(component, "gradient reaches the router through the estimator"):
        model = _routed_model(spec, seed=0)
        tokens, levels = _sample(model)
        targets = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], IGNORE)], dim=1)
        model(tokens, levels, targets).loss.backward()  # the next-byte loss alone: no router loss
        router = model.router(1)
        missing = [n for n, p in router.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
        assert not missing, f"the next-byte loss gives no gradient to {missing}"
    if model_examples:
        _models(component, spec, model_examples, shrink=shrink)


def _same_decision(got: Any, whole: Any, j: int, where: str) -> None:
    import torch

    p, q = got.prob[:, 0].float(), whole.prob[:, j].float()
    torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5, msg=lambda m: f"{where}: prob {m}")
    clear = (q - 0.5).abs() > THRESHOLD_SLACK
    assert torch.equal(got.boundary[:, 0][clear], whole.boundary[:, j][clear]), (
        f"{where}: boundary {got.boundary[:, 0].tolist()} against the forward's {whole.boundary[:, j].tolist()}"
    )


def _routed_spec(spec: Any, depth: int = 1) -> Any:
    """A tiny spec whose levels 1..``depth`` are routed by ``spec``."""
    from aunet.core.spec import LevelSpec, ModelSpec, Spec
    from aunet.plugins.transformer import TransformerSpec

    levels = [LevelSpec(dim=DIM_FINE, stage=TransformerSpec(layers=1, head_dim=4))]
    levels += [LevelSpec(dim=DIM_FINE, router=spec, stage=TransformerSpec(layers=1, head_dim=4)) for _ in range(depth)]
    return Spec(name="routed", model=ModelSpec(context=64), levels=tuple(levels))


def _routed_model(spec: Any, *, seed: int, depth: int = 1) -> Any:
    import torch

    from aunet.core.model import build_model

    torch.manual_seed(seed)
    model = build_model(_routed_spec(spec, depth))
    for router in model.routers.values():
        scramble(router, seed)
    return model


def _sample(model: Any) -> tuple[Any, Any]:
    """(1, 48) tokens and levels of a verse, with next-byte targets."""
    from aunet.testing.models import pack

    tokens, levels = pack(model.spec, [b"In the beginning God created the heaven and the earth."], 48)
    return tokens[None], levels[None]


def _models(component: str, spec: Any, examples: int, *, shrink: bool) -> None:
    """The router inside whole models of one and two routed levels, its parameters at random."""
    from hypothesis import given
    from hypothesis import strategies as st

    from aunet.testing.models import assert_causal, assert_matches_teacher_forcing, documents

    length = 40

    @given(
        depth=st.integers(1, 2),
        seed=st.integers(0, 1000),
        docs=documents(),
        new=st.binary(min_size=length, max_size=length),
        t=st.integers(0, length - 2),
        prompts=st.lists(
            st.binary(max_size=24) | st.text(alphabet="ab c.\\n", max_size=24).map(str.encode), min_size=1, max_size=2
        ),
    )
    def in_models(depth: int, seed: int, docs: Any, new: bytes, t: int, prompts: list[bytes]) -> None:
        model = _routed_model(spec, seed=seed, depth=depth).eval()
        with _invariant(component, "inside a model: causality"):
            assert_causal(model, docs, new, t, length)
        with _invariant(component, "inside a model: generation equals teacher forcing"):
            assert_matches_teacher_forcing(model, prompts, 12)

    _run(in_models, examples, shrink=shrink)
