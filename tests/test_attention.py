"""Attention backends own their plans: every kind equals the float32 oracle (``math``) on what
it can run, the windowed byte stage never builds a (T, T) mask, backends that cannot run somewhere
say so before anything starts, and ``aunet profile`` labels every stage."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aunet
from aunet.core.model import ShapeMode
from aunet.core.modules import Layout
from aunet.core.overrides import apply_overrides
from aunet.plugins.nn.attention import BandPlan, FlexBackend, MathBackend, SdpaBackend
from aunet.testing import documents, pack, small_specs

from conftest import ATTENTION_EXAMPLES, run_cli, write_spec

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="needs a CUDA device; this machine has none (CPU-only torch or no GPU)"
)
T = 48


def with_attention(spec, kind: str):
    return apply_overrides(
        spec, [f'levels[{i}].stage.attention={{ kind = "{kind}" }}' for i in range(len(spec.levels))]
    )


def built(spec, device="cpu"):
    torch.manual_seed(0)
    return aunet.build_model(spec, device=device).eval()


@settings(max_examples=ATTENTION_EXAMPLES, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.sampled_from([1, 2]),
    s=st.integers(1, 70),
    w=st.integers(1, 40),
    docs=st.booleans(),
    data=st.data(),
)
def test_backends_equal_the_oracle_on_random_layouts(b: int, h: int, s: int, w: int, docs: bool, data) -> None:
    torch.manual_seed(s)
    q, k, v = (torch.randn(b, h, s, 8) for _ in range(3))
    starts = data.draw(st.lists(st.booleans(), min_size=b * s, max_size=b * s))
    doc = torch.tensor(starts).view(b, s).long().cumsum(1) if docs else None
    layout = Layout(doc=doc)
    reference = MathBackend()
    expected = reference(q, k, v, reference.plan(layout, batch=b, length=s, window=w, device="cpu"))
    for backend in (SdpaBackend(), SdpaBackend(kernel="math"), FlexBackend(compile=False)):
        got = backend(q, k, v, backend.plan(layout, batch=b, length=s, window=w, device="cpu"))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{type(backend).__name__}: {m}")


@settings(max_examples=ATTENTION_EXAMPLES, deadline=None)
@given(spec=small_specs(max_depth=2, attention=("math",)), docs=documents(), pad=st.integers(0, 12))
def test_flex_and_sdpa_models_equal_math_on_packed_documents_and_padding(spec, docs, pad: int) -> None:
    tokens, levels = pack(spec, docs, T)
    padded = torch.cat([tokens, torch.full((pad,), 258)])[None]
    padded_levels = torch.cat([levels, torch.zeros(pad, dtype=torch.uint8)])[None]
    with torch.no_grad():
        expected = built(spec)(padded, padded_levels).logits  # static shapes, document mask
        for kind in ("flex", "sdpa"):
            got = built(with_attention(spec, kind))(padded, padded_levels).logits
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{kind}: {m}")


def test_flex_generation_equals_its_teacher_forcing() -> None:
    from test_generate import assert_matches_teacher_forcing

    spec = with_attention(aunet.load_spec("aunet3-tiny"), "flex")
    assert_matches_teacher_forcing(built(spec), [b"In the beginning God", b"x"], 30)


def test_a_windowed_byte_stage_at_8192_builds_no_t_by_t_tensor() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    spec = aunet.parse_spec(
        '[model]\ncontext = 8192\n[[levels]]\ndim = 16\nstage = { kind = "transformer", '
        "layers = 1, head_dim = 8, window = 512 }"
    )
    model = built(spec)
    tokens = torch.randint(0, 256, (1, 8192))
    tokens[0, 0], tokens[0, 4000] = 256, 256  # two packed documents
    shapes: list[tuple[int, ...]] = []

    class Shapes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            for r in result if isinstance(result, (tuple, list)) else [result]:
                if isinstance(r, torch.Tensor):
                    shapes.append(tuple(r.shape))
            return result

    with torch.no_grad(), Shapes():
        model(tokens, torch.zeros_like(tokens, dtype=torch.uint8))
    quadratic = [s for s in shapes if sum(d >= 4096 for d in s) >= 2]
    assert not quadratic, quadratic[:3]
    plan = model.trunk.backend.plan(
        Layout(doc=(tokens == 256).long().cumsum(1)), batch=1, length=8192, window=512, device="cpu"
    )
    assert isinstance(plan, BandPlan) and plan.mask.numel() == 16 * 512 * 1024  # linear in T: N x W x 2W


def test_plugins_lists_every_attention_kind() -> None:
    listing = json.loads(run_cli("plugins", "--json").stdout)
    assert {e["kind"] for e in listing["families"]["attention"]} == {"sdpa", "math", "flex", "flash"}


@pytest.mark.skipif(CUDA, reason="checks the refusals of a machine without CUDA")
def test_backends_that_cannot_run_here_say_so_before_starting(tmp_path, corpus_file) -> None:
    spec_file = write_spec(tmp_path)
    common = ["train", "--spec", str(spec_file), "--data", str(corpus_file), "--steps", "1", "--device", "cpu"]
    flash = run_cli(*common, "--out", str(tmp_path / "a"), "--set", 'levels[1].stage.attention={ kind = "flash" }')
    assert flash.returncode == 2 and "attention kind 'flash' needs a CUDA device" in flash.stderr
    assert "use sdpa (any device) or math" in flash.stderr and "Traceback" not in flash.stderr
    flex = run_cli(*common, "--out", str(tmp_path / "b"), "--set", 'levels[0].stage.attention={ kind = "flex" }')
    assert flex.returncode == 2 and "levels[0].stage: flex cannot train on cpu" in flex.stderr and "sdpa" in flex.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(aunet.core.errors.AunetError, match="needs a CUDA device"):
        aunet.build_model(with_attention(aunet.load_spec("aunet2-tiny"), "flash"))


def test_flex_inference_runs_on_a_cpu() -> None:
    spec = with_attention(aunet.load_spec("aunet2-tiny"), "flex")
    data = b"In the beginning God created the heavens and the earth."
    tokens, levels = aunet.encode(data), aunet.compute_levels(spec, data)
    with torch.no_grad():
        flex = built(spec)(tokens[None], levels[None], shapes=ShapeMode.EAGER).logits
        sdpa = built(aunet.load_spec("aunet2-tiny"))(tokens[None], levels[None], shapes=ShapeMode.EAGER).logits
    torch.testing.assert_close(flex, sdpa, rtol=1e-5, atol=1e-5)


def _labels(folder) -> set[str]:
    (trace,) = folder.glob("*.pt.trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    return {e["name"] for e in events if e.get("cat") == "user_annotation"}


def test_profile_writes_labelled_traces_and_a_table(tmp_path) -> None:
    result = run_cli(
        "profile",
        "--spec",
        "aunet2-tiny",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "prof"),
        "--device",
        "cpu",
        "--context",
        "256",
        "--batch",
        "2",
        "--attention",
        "sdpa",
        "flex",
    )
    assert result.returncode == 0, result.stderr
    labels = _labels(tmp_path / "prof" / "sdpa")
    expected = {"encoder.0", "pool.1", "trunk", "upsample.1", "decoder.0", "head", "loss", "backward", "optimizer"}
    assert expected <= labels, labels
    for name in ("encoder.0", "trunk", "backward", "optimizer"):
        assert f"  {name} " in result.stdout
    assert "sdpa: " in result.stdout and "ms per step" in result.stdout and "peak memory" in result.stdout
    assert "flex: skipped: flex cannot train on cpu" in result.stdout


def test_a_window_of_a_real_run_is_profiled(tmp_path, corpus_file) -> None:
    result = run_cli(
        "train",
        "--spec",
        str(write_spec(tmp_path)),
        "--data",
        str(corpus_file),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "4",
        "--profile-steps",
        "2:3",
    )
    assert result.returncode == 0, result.stderr
    assert {"encoder.0", "trunk", "backward"} <= _labels(tmp_path / "run" / "profile")
    assert "run: " in result.stderr and "ms per step" in result.stderr


# -- CUDA (skipped with a reason on CPU-only machines) -------------------------------------------

#: bfloat16 keeps 8 bits of mantissa: logits agree with float32 to about 1e-2 of their scale.
BF16_RTOL, BF16_ATOL = 3e-2, 3e-2
KINDS = ("sdpa", "flex", "flash", "math")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_forward_and_backward_equal_math(kind: str) -> None:
    base = aunet.load_spec("aunet3-tiny")
    tokens = torch.randint(0, 256, (2, 512), device="cuda")
    tokens[:, 0] = 256
    tokens[1, 200] = 256  # a second document in row 1
    levels = torch.randint(0, 3, (2, 512), device="cuda", dtype=torch.uint8)
    targets = torch.randint(0, 256, (2, 512), device="cuda")
    results = {}
    for name in ("math", kind):
        model = built(with_attention(base, name), device="cuda").train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(tokens, levels, targets)
        out.loss.backward()
        results[name] = (out.logits.float(), {n: p.grad.float() for n, p in model.named_parameters()})
    torch.testing.assert_close(results[kind][0], results["math"][0], rtol=BF16_RTOL, atol=BF16_ATOL)
    for name, grad in results["math"][1].items():
        torch.testing.assert_close(results[kind][1][name], grad, rtol=0.1, atol=5e-3, msg=lambda m: f"{name}: {m}")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "math"])
def test_cuda_training_losses_agree_across_backends(kind: str, tmp_path) -> None:
    from aunet.jobs.train.loop import train

    base = apply_overrides(
        aunet.load_spec("aunet2-tiny"),
        [
            "train.precision=bfloat16",
            "train.batch_size=4",
            "train.shapes=static",
            "train.sample.bytes=0",
            "train.eval.final_bytes=4096",
        ],
    )
    runs = {
        name: train(with_attention(base, name), data=None, out=tmp_path / name, steps=20, device="cuda")
        for name in ("sdpa", kind)
    }
    worst = max(abs(a - b) for a, b in zip(runs["sdpa"].losses, runs[kind].losses))
    assert worst < 0.05, (kind, worst)  # 20 steps in bf16: the losses stay within 0.05 nats


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_generation_equals_teacher_forcing(kind: str) -> None:
    from aunet.jobs.inference.generate import decode, sample_next

    model = built(with_attention(aunet.load_spec("aunet3-tiny"), kind), device="cuda")
    prompt = b"In the beginning God created the heavens"
    result = decode(
        model,
        [prompt],
        24,
        choose=lambda l: sample_next(l, temperature=0, top_k=None, top_p=None, generator=None),
        keep_logits=True,
    )
    final = prompt + result.new_bytes[0]
    tokens = aunet.encode(final).cuda()[None]
    levels = aunet.compute_levels(model.spec, final).cuda()[None]
    bf16 = kind == "flash"  # flash runs in bf16 only; the cached path attends in float32
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        reference = model(tokens, levels, shapes=ShapeMode.EAGER, doc_mask=False).logits[0].float()
    tolerance = (BF16_RTOL, BF16_ATOL) if bf16 else (1e-4, 1e-4)
    for j, logits in enumerate(result.logits[0]):
        torch.testing.assert_close(logits.float(), reference[len(prompt) + j], rtol=tolerance[0], atol=tolerance[1])
