"""Hypothesis strategies and checks for whole models: random small specs that draw every
registered kind, packed documents, and the two properties every model must have (causal, and
cached generation equal to teacher forcing), reused by the conformance kits."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

from aunet.testing.splitters import texts


def small_specs(
    *,
    max_depth: int = 3,
    attention: Sequence[str] | None = ("sdpa", "math"),
    context: int = 64,
    pooler: Any = None,
    upsampler: Any = None,
    stage: Any = None,
    router: Any = None,
    registry: Any = None,
) -> Any:
    """Random small, valid specs of 1 to ``max_depth + 1`` levels: widths, heads, layers,
    windows, splitter stacks, hash n-gram embeddings or none (``model.ngram``: few buckets, so
    n-grams share rows), and every pluggable family drawn from the registry (every pooler,
    upsampler and attention kind it holds that builds with its defaults, or from a kind's
    ``examples()``), so a newly registered kind is covered by the model-level properties without a
    new test. ``pooler``, ``upsampler``, ``stage`` (spec instances, registered or not) fix that
    family at every level; ``router`` (a router spec) routes the top levels of a third of the specs
    (by default every registered router kind takes its turn); ``attention`` limits the attention
    kinds (None: every kind that runs on a CPU)."""
    from hypothesis import strategies as st

    from aunet.core.registry import Family, default_registry
    from aunet.core.spec import LevelSpec, ModelSpec, Spec
    from aunet.plugins.transformer import TransformerSpec
    from aunet.plugins.upsamplers import MultiLinearSpec, OffsetMode
    from aunet.splitters.patches import Fixed, Spacelike
    from aunet.splitters.words import NWord

    registry = registry or default_registry()
    poolers = [pooler] if pooler is not None else registered_examples(registry, Family.POOLER)
    upsamplers = (
        [upsampler]
        if upsampler is not None
        else [u for u in registered_examples(registry, Family.UPSAMPLER) if not isinstance(u, MultiLinearSpec)]
    )
    routers = [router] if router is not None else registered_examples(registry, Family.ROUTER)
    backends = [
        a
        for a in registered_examples(registry, Family.ATTENTION)
        if _runs_on_cpu(a) and (attention is None or a.kind in attention)
    ]

    @st.composite
    def build(draw: Any) -> Any:
        depth = draw(st.integers(0, max_depth))
        groups = sorted(draw(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=depth, max_size=depth)))
        # Boundaries: words (every n-th), SpaceByte's spacelike rule under them, or MEGABYTE's
        # fixed patches with strides that divide each other.
        rule = draw(st.sampled_from(["words", "spacelike", "fixed"]))
        strides = list(itertools.accumulate((g + 1 for g in groups), operator.mul))
        # Levels from `routed` up take their boundaries from a router (none when it is past the top).
        routed = draw(st.sampled_from([depth + 1, depth + 1, *range(1, depth + 1)])) if routers else depth + 1
        level_router = draw(st.sampled_from(routers)) if routers else None
        levels = []
        for i in range(depth + 1):
            head_dim = draw(st.sampled_from([4, 8]))
            dim = head_dim * draw(st.integers(1, 4))
            if stage is not None:
                dim = draw(st.sampled_from([d for d in (8, 12, 16, 24) if not stage.check(path="", dim=d)] or [16]))
                level_stage = stage
            else:
                window = draw(st.one_of(st.none(), st.integers(1, 12))) if i == 0 else None
                level_stage = TransformerSpec(
                    layers=draw(st.integers(1, 2)),
                    head_dim=head_dim,
                    window=window,
                    attention=draw(st.sampled_from(backends)),
                )
            extra: dict[str, Any] = {}
            if i:
                choice = draw(st.sampled_from(["multi-linear", *range(len(upsamplers))])) if upsampler is None else 0
                if choice == "multi-linear":
                    up = MultiLinearSpec(offsets=draw(st.integers(1, 6)), mode=draw(st.sampled_from(list(OffsetMode))))
                else:
                    up = upsamplers[choice]
                if i >= routed:
                    splitter = None
                elif rule == "fixed":
                    splitter = Fixed(every=strides[i - 1])
                elif rule == "spacelike" and i == 1:
                    splitter = Spacelike()
                else:
                    splitter = NWord(n=groups[i - 1])
                extra = {
                    "splitter": splitter,
                    "router": level_router if i >= routed else None,
                    "pooler": draw(st.sampled_from(poolers)),
                    "upsampler": up,
                    "contraction": draw(st.one_of(st.none(), st.sampled_from([1.5, 3.0, 6.0]))),
                }
            levels.append(LevelSpec(dim=dim, stage=level_stage, **extra))
        ngram = draw(st.none() | ngram_specs())
        return Spec(name="random", model=ModelSpec(context=context, ngram=ngram), levels=tuple(levels))

    return build()


def ngram_specs(*, max_size: int = 6, max_buckets: int = 16) -> Any:
    """Hash n-gram embedding specs (``aunet.core.spec.NgramSpec``): increasing lengths from 2 to
    ``max_size``, 1 to ``max_buckets`` rows per table."""
    from hypothesis import strategies as st

    from aunet.core.spec import NgramSpec

    sizes = st.sets(st.integers(2, max_size), min_size=1).map(lambda s: tuple(sorted(s)))
    return st.builds(NgramSpec, sizes=sizes, buckets=st.integers(1, max_buckets))


def registered_examples(registry: Any, family: Any) -> list[Any]:
    """Instances of every kind of a family: the kind's ``examples()`` when it has them, else the
    kind built with its defaults (kinds that need options and give no examples are left out)."""
    out = []
    for registration in registry.kinds(family).values():
        examples = getattr(registration.cls, "examples", None)
        if callable(examples):
            out.extend(examples())
            continue
        try:
            out.append(registration.cls())
        except TypeError:
            continue
    return out


def _runs_on_cpu(attention: Any) -> bool:
    import torch

    from aunet.core.errors import AunetError

    try:
        attention.resolve(device=torch.device("cpu"))
    except AunetError:
        return False
    return True


def documents(max_docs: int = 3, max_bytes: int = 40) -> Any:
    """Lists of documents (bytes) mixing text and arbitrary bytes."""
    from hypothesis import strategies as st

    return st.lists(st.one_of(texts(max_bytes), st.binary(max_size=max_bytes)), min_size=1, max_size=max_docs)


def pack(spec: Any, docs: Sequence[bytes], length: int) -> tuple[Any, Any]:
    """One row: BOS + doc + EOS for each document, cut or padded (PAD, level 0) to ``length``.
    Returns (tokens, levels), both (length,) tensors."""
    import torch

    from aunet.core.model import compute_levels, encode
    from aunet.core.tokens import PAD

    tokens = torch.cat([encode(d, eos=True) for d in docs])
    levels = torch.cat([compute_levels(spec, d, eos=True) for d in docs])
    if len(tokens) < length:
        pad = length - len(tokens)
        tokens = torch.cat([tokens, torch.full((pad,), PAD, dtype=torch.long)])
        levels = torch.cat([levels, torch.zeros(pad, dtype=torch.uint8)])
    return tokens[:length], levels[:length]


def assert_causal(model: Any, docs: Sequence[bytes], new: bytes, t: int, length: int) -> None:
    """Changing every byte after position ``t`` (and its level) changes no logit at or before
    ``t``, bit for bit; AssertionError naming the documents and ``t`` otherwise."""
    import torch

    spec = model.spec
    tokens, levels = pack(spec, docs, length)
    changed, pos = [], 0
    for doc in docs:  # documents keep their BOS and EOS; the splitters are prefix-stable
        start = pos + 1
        keep = max(0, min(len(doc), t + 1 - start))
        changed.append(doc[:keep] + new[: len(doc) - keep])
        pos += len(doc) + 2
    tokens2, levels2 = pack(spec, changed, length)
    assert torch.equal(tokens[: t + 1], tokens2[: t + 1]) and torch.equal(levels[: t + 1], levels2[: t + 1]), (
        f"the tokens or levels at or before {t} changed with the bytes after it: {docs!r} -> {changed!r}"
    )
    with torch.no_grad():
        a = model(tokens[None], levels[None]).logits
        b = model(tokens2[None], levels2[None]).logits
    assert torch.equal(a[0, : t + 1], b[0, : t + 1]), f"a logit at or before {t} changed: {docs!r} -> {changed!r}"


def assert_matches_teacher_forcing(
    model: Any,
    prompts: Sequence[bytes],
    new: int,
    *,
    tolerance: float = 1e-5,
    step_modes: Sequence[str] = ("eager", "static", "compiled"),
) -> None:
    """Cached greedy decoding gives, for every new byte, the logits of the teacher-forced forward
    over the final text (within ``tolerance``), with steps run each of the ``step_modes`` ways
    (``aunet.core.decoding.StepMode``: eager, with the rows and cache slots each level needs;
    static, every shape fixed; compiled, its buckets of rows and cache slots, run uncompiled
    under ``shapes_only``: compiling a graph per bucket would take minutes, and this project's
    tests hold compiled graphs to those shapes within 1e-4)."""
    from aunet.core.decoding import shapes_only

    with shapes_only():
        for mode in step_modes:
            _matches_teacher_forcing(model, prompts, new, tolerance=tolerance, step_mode=mode)


def _matches_teacher_forcing(
    model: Any, prompts: Sequence[bytes], new: int, *, tolerance: float, step_mode: str
) -> None:
    import torch

    from aunet.core.model import ShapeMode, compute_levels, encode
    from aunet.jobs.inference.generate import decode, sample_next

    def greedy(logits: Any) -> Any:
        return sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None)

    result = decode(model, list(prompts), new, choose=greedy, keep_logits=True, step_mode=step_mode)
    for row, prompt in enumerate(prompts):
        final = prompt + result.new_bytes[row]
        tokens, levels = encode(final), compute_levels(model.spec, final)
        with torch.no_grad():
            reference = model(tokens[None], levels[None], shapes=ShapeMode.EAGER).logits[0]
        assert len(result.logits[row]) >= 1
        for j, logits in enumerate(result.logits[row]):
            torch.testing.assert_close(
                logits,
                reference[len(prompt) + j],
                rtol=tolerance,
                atol=tolerance,
                msg=lambda m: f"{step_mode} steps, row {row}, new byte {j}, prompt {prompt!r}: {m}",
            )
