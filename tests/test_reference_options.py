"""The reference's options as spec options: each one's effect, and its round trip through
``spec show --json`` (docs/guides/specs.md, "The reference's options")."""

from __future__ import annotations

import json
import math

import pytest
import torch

import aunet
from aunet.cli.main import main
from aunet.core import SpecError
from aunet.core.accounting import account, row_activation_bytes
from aunet.core.convert import dump_spec, spec_to_dict
from aunet.core.init import truncated_std
from aunet.core.model import IGNORE, ShapeMode, build_model, compute_levels, encode
from aunet.core.overrides import apply_overrides
from aunet.core.spec import Checkpointing, Precision, resolve_spec
from aunet.jobs.config import parse_spec
from aunet.testing import assert_matches_teacher_forcing, pack

TEXT = b"In the beginning God created the heavens and the earth. The earth was formless and empty. "

WIDE = """
name = "wide"
[model]
context = 256
{model}
[[levels]]
dim = 256
stage = {{ kind = "transformer", layers = 2, head_dim = 64 {stage0} }}
[[levels]]
dim = 512
splitter = "whitespace"
stage = {{ kind = "transformer", layers = 4, head_dim = 64 }}
{level1}
"""


def wide(model: str = "", stage0: str = "", level1: str = "") -> aunet.Spec:
    spec = parse_spec(WIDE.format(model=model, stage0=stage0, level1=level1), source="wide.toml")
    return resolve_spec(spec, contraction=[5.0])


def _std(w: torch.Tensor) -> float:
    return float(w.detach().float().std())


def test_reference_init_gives_every_matrix_fan_in_to_the_minus_half_truncated() -> None:
    torch.manual_seed(0)
    model = build_model(wide('init = "reference"'))
    block = model.encoders[0].blocks[0]
    trunk = model.trunk.blocks[3]
    hidden = model.trunk.hidden
    expected = {
        "embedding": (model.embed.weight, 256),
        "head": (model.head.weight, 256),
        "encoder qkv": (block.qkv.weight, 256),
        "encoder out": (block.out.weight, 256),
        "trunk gate_up": (trunk.gate_up.weight, 512),
        "trunk down": (trunk.down.weight, hidden),
        "pooler": (model.poolers[0].proj.weight, 256),
        "upsampler": (model.upsamplers[0].per_offset, 512),
    }
    for name, (weight, fan_in) in expected.items():
        want = truncated_std(fan_in**-0.5)
        assert _std(weight) == pytest.approx(want, rel=0.03), name
        assert float(weight.detach().abs().max()) <= 3 * fan_in**-0.5 + 1e-6, f"{name}: not truncated at 3 sigmas"


def test_scaled_init_is_0_02_with_depth_scaled_outputs_and_a_stage_may_override_the_model() -> None:
    torch.manual_seed(0)
    model = build_model(wide('init = "reference"', stage0=', init = "scaled"'))
    block = model.encoders[0].blocks[1]
    assert _std(block.qkv.weight) == pytest.approx(0.02, rel=0.03)
    assert _std(block.out.weight) == pytest.approx(0.02 / math.sqrt(2 * 2), rel=0.03)
    assert _std(block.down.weight) == pytest.approx(0.02 / math.sqrt(2 * 2), rel=0.03)
    # The trunk names no init, so it takes the model's.
    assert _std(model.trunk.blocks[0].qkv.weight) == pytest.approx(truncated_std(512**-0.5), rel=0.03)
    default = build_model(wide())
    assert _std(default.trunk.blocks[0].out.weight) == pytest.approx(0.02 / math.sqrt(8), rel=0.03)
    assert float(default.embed.weight.detach().abs().max()) > 3 * 256**-0.5  # a plain normal: not truncated


def test_the_paper_specs_use_the_reference_init() -> None:
    for name in ("aunet2-1b", "aunet3-1b", "aunet4-1b"):
        spec = resolve_spec(aunet.load_spec(f"specs/paper/{name}.toml"))
        assert spec.model.init.value == "reference"
        assert all(level.stage.init.value == "reference" for level in spec.levels)


def _two_documents(model: aunet.AUNet, first: bytes, second: bytes) -> torch.Tensor:
    tokens, levels = pack(model.spec, [first, second], 96)
    with torch.no_grad():
        return model(tokens[None], levels[None]).logits[0]  # the spec's model.doc_mask, by default


def test_without_doc_mask_packed_documents_see_each_other() -> None:
    spec = aunet.load_spec("aunet2-tiny")
    for doc_mask in (True, False):
        torch.manual_seed(0)
        model = build_model(apply_overrides(spec, [f"model.doc_mask={str(doc_mask).lower()}"])).eval()
        a = _two_documents(model, b"the first document ", b"and the second one")
        b = _two_documents(model, b"THE FIRST DOCUMENT ", b"and the second one")
        start = 1 + len(b"the first document ") + 1  # BOS, the first document, EOS
        second_changed = not torch.equal(a[start:], b[start:])
        assert second_changed is (not doc_mask)


def test_the_trainer_honours_doc_mask(monkeypatch, tmp_path) -> None:
    from aunet.jobs.train import trainer as trainer_module

    seen: list[bool] = []
    original = trainer_module.Trainer.step

    def spy(self, fraction):
        forward = self.forward

        def recording(*args, **kwargs):
            seen.append(kwargs["doc_mask"])
            return forward(*args, **kwargs)

        self.forward = recording
        try:
            return original(self, fraction)
        finally:
            self.forward = forward

    monkeypatch.setattr(trainer_module.Trainer, "step", spy)
    corpus = tmp_path / "short.jsonl"  # documents of about 40 bytes: every 256-byte row packs several
    corpus.write_text("".join(json.dumps({"text": f"document {i}: the earth was formless."}) + "\n" for i in range(60)))
    for value in (True, False):
        seen.clear()
        code = main(
            [
                "train",
                "--steps",
                "2",
                "--out",
                str(tmp_path / f"run-{value}"),
                "--device",
                "cpu",
                "--data",
                str(corpus),
                "--set",
                f"model.doc_mask={str(value).lower()}",
                "--set",
                "train.batch_size=2",
                "--set",
                "model.context=256",
                "--set",
                "train.sample.bytes=0",
            ]
        )
        assert code == 0
        assert seen and all(flag is value for flag in seen), (value, seen)


def test_grouped_query_attention_shrinks_parameters_and_cache_and_decodes_exactly() -> None:
    spec = wide(stage0=", kv_heads = 1")
    torch.manual_seed(0)
    model = build_model(spec).eval()
    block = model.encoders[0].blocks[0]
    assert block.qkv.weight.shape == (256 + 2 * 64, 256)
    assert sum(p.numel() for p in model.parameters()) == account(spec).parameters
    cache = model.encoders[0].new_cache(batch=1, capacity=8, device="cpu", dtype=torch.float32)
    assert cache.k[0].shape[1] == 1  # per layer (B, kv_heads, capacity + 1, K)
    assert_matches_teacher_forcing(model, [b"The earth was ", b"In the"], 12)
    with pytest.raises(SpecError, match=r"levels\[0\]\.stage\.kv_heads: 3 does not divide the 4 heads"):
        build_model(wide(stage0=", kv_heads = 3"))


def test_no_skip_leaves_the_decoder_only_the_upsampled_vectors() -> None:
    captured = {}
    for skip in (True, False):
        torch.manual_seed(0)
        model = build_model(wide() if skip else _no_skip()).eval()
        model.upsamplers[0].register_forward_hook(lambda m, i, o: captured.__setitem__("up", o))
        model.decoders[0].register_forward_pre_hook(lambda m, i: captured.__setitem__("dec", i[0]))
        model.encoders[0].register_forward_hook(lambda m, i, o: captured.__setitem__("enc", o))
        tokens, levels = encode(TEXT)[None], compute_levels(model.spec, TEXT)[None]
        with torch.no_grad():
            model(tokens, levels)
        expected = captured["up"] + captured["enc"] if skip else captured["up"]
        torch.testing.assert_close(captured["dec"], expected, rtol=0, atol=0)
    with pytest.raises(SpecError, match=r"levels\[1\]\.skip: the last level is the trunk"):
        build_model(wide(level1="skip = false"))


def _no_skip() -> aunet.Spec:
    spec = parse_spec(
        WIDE.format(model="", stage0="", level1="").replace("dim = 256\n", "dim = 256\nskip = false\n", 1),
        source="wide.toml",
    )
    return resolve_spec(spec, contraction=[5.0])


def test_repeat_with_offset_embedding_adds_one_row_per_offset() -> None:
    from aunet.plugins.upsamplers import RepeatSpec

    plain = RepeatSpec().build(dim_coarse=8, dim_fine=4)
    spec = RepeatSpec(offset_embedding=True, offsets=4, mode="clamp")
    with_offsets = spec.build(dim_coarse=8, dim_fine=4)
    assert spec.parameter_count(dim_coarse=8, dim_fine=4) == sum(p.numel() for p in with_offsets.parameters())
    assert spec.parameter_count(dim_coarse=8, dim_fine=4) == RepeatSpec().parameter_count(dim_coarse=8, dim_fine=4) + 16
    with_offsets.load_state_dict(plain.state_dict(), strict=False)
    coarse = torch.randn(1, 2, 8)
    segment = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    offset = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 5]])
    table = with_offsets.offset_embedding.weight
    expected = plain(coarse, segment, offset) + table[offset.clamp(max=3)]
    torch.testing.assert_close(with_offsets(coarse, segment, offset), expected)


def test_non_param_pooling_passes_the_boundary_vectors_through() -> None:
    from aunet.core.model import boundary_index
    from aunet.core.modules import LevelIndex  # noqa: F401  (the index type the pooler reads)
    from aunet.plugins.poolers import MeanSpec, SelectSpec

    for spec in (SelectSpec(non_param=True), MeanSpec(non_param=True)):
        pooler = spec.build(dim_in=4, dim_out=4)
        assert spec.parameter_count(dim_in=4, dim_out=4) == 0 == sum(p.numel() for p in pooler.parameters())
    x = torch.randn(1, 6, 4)
    level = boundary_index(torch.tensor([[True, False, True, False, False, True]]), 3)
    torch.testing.assert_close(SelectSpec(non_param=True).build(dim_in=4, dim_out=4)(x, level), x[:, [0, 2, 5]])
    mean = MeanSpec(non_param=True).build(dim_in=4, dim_out=4)(x, level)
    torch.testing.assert_close(mean[0, 2], x[0, 3:6].mean(0))
    with pytest.raises(SpecError, match=r"levels\[1\]\.pooler\.non_param: .* dim 256 and this level 512"):
        build_model(wide(level1='pooler = { kind = "select", non_param = true }'))


def test_ffn_dim_multiplier_follows_llamas_rule() -> None:
    from aunet.plugins.transformer import TransformerSpec

    spec = TransformerSpec(layers=1, ffn_dim_multiplier=1.3)
    assert spec.hidden(512) == 256 * math.ceil(int(1.3 * int(8 * 512 / 3)) / 256) == 1792
    assert TransformerSpec(layers=1).hidden(512) == 1536
    assert spec.build(dim=512).blocks[0].gate_up.weight.shape == (2 * 1792, 512)


def test_the_level_head_trains_and_generation_can_use_it() -> None:
    spec = apply_overrides(aunet.load_spec("aunet3-tiny"), ["model.level_loss=0.5"])
    torch.manual_seed(0)
    model = build_model(spec).eval()
    tokens, levels = encode(TEXT)[None], compute_levels(model.spec, TEXT)[None]
    targets = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], IGNORE)], 1)
    out = model(tokens, levels, targets)
    assert out.level_logits.shape == (1, tokens.shape[1], 3)
    lv = model.top_levels(tokens, levels)
    manual = torch.nn.functional.cross_entropy(out.level_logits[0, :-1], lv[0, 1:].long())
    torch.testing.assert_close(out.level_loss, manual * (tokens.shape[1] - 1) / out.n_predicted)
    assert account(spec).parameters == sum(p.numel() for p in model.parameters())

    from aunet.jobs.inference.generate import decode, sample_next

    prompt = b"In the beginning "
    result = decode(
        model,
        [prompt],
        24,
        choose=lambda z: sample_next(z, temperature=0.0, top_k=None, top_p=None, generator=None),
        keep_logits=True,
        levels="predicted",
    )
    new = result.new_bytes[0]
    assert len(new) == len(result.levels[0]) > 0
    # The teacher-forced forward over prompt + new bytes, with the prompt's splitter levels and
    # the predicted ones, reproduces every logit and every level prediction: the path is causal.
    final = prompt + new
    full_levels = compute_levels(spec, final)
    full_levels[1 + len(prompt) :] = torch.tensor(result.levels[0], dtype=full_levels.dtype)
    with torch.no_grad():
        forced = model(encode(final)[None], full_levels[None], shapes=ShapeMode.EAGER)
    for i, logits in enumerate(result.logits[0][: len(new)]):
        torch.testing.assert_close(logits, forced.logits[0, len(prompt) + i], rtol=1e-5, atol=1e-5)
    predicted = forced.level_logits[0, len(prompt) : len(prompt) + len(new)].argmax(-1)
    assert predicted.tolist() == result.levels[0]


def test_predicted_levels_need_a_level_head() -> None:
    from aunet.core.errors import InputError
    from aunet.jobs.inference.generate import generate

    model = build_model(aunet.load_spec("aunet2-tiny"))
    with pytest.raises(InputError, match="needs a model trained with a level head"):
        generate(model, [b"x"], 2, levels="predicted")
    with pytest.raises(ValueError, match="levels must be one of splitter, predicted"):
        generate(model, [b"x"], 2, levels="oracle")


ALL_OPTIONS = """
name = "every-option"
[model]
context = 256
init = "reference"
doc_mask = false
level_loss = 0.25
[[levels]]
dim = 64
skip = false
stage = { kind = "transformer", layers = 1, head_dim = 16, kv_heads = 2, ffn_dim_multiplier = 1.5, init = "scaled" }
[[levels]]
dim = 64
splitter = "pretok"
max_segments = 40
pooler = { kind = "select", non_param = true }
upsampler = { kind = "repeat", offset_embedding = true, offsets = 8, mode = "clamp" }
stage = { kind = "transformer", layers = 1, head_dim = 16 }
"""


def test_every_option_round_trips_through_spec_show_json(tmp_path, capsys) -> None:
    path = tmp_path / "every.toml"
    path.write_text(ALL_OPTIONS)
    assert main(["spec", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    model, levels = shown["spec"]["model"], shown["spec"]["levels"]
    assert (model["init"], model["doc_mask"], model["level_loss"]) == ("reference", False, 0.25)
    assert levels[0]["skip"] is False
    assert (levels[0]["stage"]["kv_heads"], levels[0]["stage"]["ffn_dim_multiplier"], levels[0]["stage"]["init"]) == (
        2,
        1.5,
        "scaled",
    )
    assert levels[1]["pooler"] == {
        "kind": "select",
        "non_param": True,
        "norm_eps": 1e-5,
        "init": "reference",
        "init_std": 0.02,
    }
    assert levels[1]["upsampler"]["offset_embedding"] is True and levels[1]["max_segments"] == 40
    assert levels[1]["splitter"]["kind"] == "pretok"
    assert shown["reference_flops_per_byte"] > 0 and "reference_flops_per_byte" in shown["formulas"]
    assert shown["parameters_by_component"]["level_head"] == 64 * 2
    again = parse_spec(dump_spec(aunet.load_spec(str(path))), source="again.toml")
    assert spec_to_dict(again) == spec_to_dict(aunet.load_spec(str(path)))
    built = build_model(resolve_spec(again, contraction=[4.5]))
    assert sum(p.numel() for p in built.parameters()) == account(resolve_spec(again, contraction=[4.5])).parameters


def test_reference_flops_estimator_by_hand() -> None:
    spec = resolve_spec(aunet.load_spec("specs/paper/aunet2-1b.toml"))
    sizes = account(spec)
    k, context = 5.0, 8192
    expected = 6 * sizes.parameters_by_component["output"]
    for i, (dim, kk) in enumerate(((512, 1.0), (2048, k))):
        stage = spec.levels[i].stage
        attended = min(context / kk, stage.window or math.inf)
        per = 6 * stage.parameter_count(dim=dim) + 3.5 * 4 * stage.layers * attended * dim / 2
        expected += (2 if i == 0 else 1) * per / kk
    expected += (
        6
        * (sizes.parameters_by_component["levels[1].pooler"] + sizes.parameters_by_component["levels[1].upsampler"])
        / k
    )
    assert sizes.reference_flops_per_byte == pytest.approx(expected, rel=1e-12)
    assert sizes.reference_flops_per_byte == pytest.approx(1.816e9, rel=1e-3)


def _saved_bytes(module, run, dtype) -> float:
    """Bytes of the tensors autograd keeps for backward (parameters and their autocast copies
    excluded), as the estimate counts them."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    shapes = {tuple(p.shape) for p in module.parameters() if p.dim() == 2}
    shapes |= {s[::-1] for s in shapes}
    seen = {}

    def keep(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key[0] not in params and not (t.dim() == 2 and tuple(t.shape) in shapes):
            seen[key] = t.untyped_storage().nbytes()
        return t

    with (
        torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16),
    ):
        run()
    return sum(seen.values())


@pytest.mark.parametrize("bfloat16", [False, True])
def test_memory_estimate_matches_what_autograd_keeps(bfloat16: bool) -> None:
    from aunet.core.modules import Layout
    from aunet.plugins.transformer import TransformerSpec

    dtype = torch.bfloat16 if bfloat16 else torch.float32
    for spec in (
        TransformerSpec(layers=2, head_dim=32),
        TransformerSpec(layers=2, head_dim=32, kv_heads=2, ffn_hidden=384),
    ):
        stage = spec.build(dim=128)
        x = torch.randn(2, 100, 128, requires_grad=True)
        got = _saved_bytes(stage, lambda: stage(x, layout=Layout()), dtype) / 200
        want = spec.activation_bytes_per_position(dim=128, bfloat16=bfloat16, checkpointing=Checkpointing.NONE)
        assert want == pytest.approx(got, rel=0.02)
    model_spec = resolve_spec(aunet.load_spec("aunet2-tiny"))
    model = build_model(model_spec)
    data = (TEXT * 20)[: model_spec.model.context - 1]
    tokens, levels = encode(data)[None], compute_levels(model_spec, data)[None]
    targets = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], IGNORE)], 1)
    got = _saved_bytes(model, lambda: model(tokens, levels, targets, doc_mask=False), dtype)
    want, unknown = row_activation_bytes(model_spec, bfloat16=bfloat16, checkpointing=Checkpointing.NONE)
    assert unknown == [] and want == pytest.approx(got, rel=0.15)
    full, _ = row_activation_bytes(model_spec, bfloat16=bfloat16, checkpointing=Checkpointing.FULL)
    assert full < want


def test_spec_show_reports_memory_per_device_size(capsys) -> None:
    assert main(["spec", "show", "specs/paper/aunet2-1b.toml"]) == 0
    text = capsys.readouterr().out
    assert "the reference's estimator: 1.816e+09" in text
    assert "largest batch (rows of the context) that fits in 24 GiB, 40 GiB, 80 GiB, 141 GiB" in text
    sizes = account(aunet.load_spec("specs/paper/aunet2-1b.toml"))
    by_mode = {(m.precision, m.checkpointing): m for m in sizes.memory}
    none, full = by_mode[(Precision.BFLOAT16, Checkpointing.NONE)], by_mode[(Precision.BFLOAT16, Checkpointing.FULL)]
    assert none.state_bytes == 18 * sizes.parameters
    assert full.largest_batch[80] > none.largest_batch[80] > 0
    assert none.largest_batch[80] == int((80 * 2**30 * 0.9 - none.state_bytes) // none.activation_bytes_per_row)


def test_cli_generate_with_predicted_levels(tmp_path, capsys) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the earth was formless and empty. " * 200)
    common = [
        "--steps",
        "1",
        "--device",
        "cpu",
        "--data",
        str(corpus),
        "--set",
        "model.context=256",
        "--set",
        "train.batch_size=2",
        "--set",
        "train.sample.bytes=0",
    ]
    assert main(["train", "--out", str(tmp_path / "plain"), *common]) == 0
    assert main(["train", "--out", str(tmp_path / "head"), *common, "--set", "model.level_loss=0.1"]) == 0
    records = [json.loads(line) for line in (tmp_path / "head" / "metrics.jsonl").read_text().splitlines()]
    assert any("level_loss" in r and r["level_loss"] > 0 for r in records)
    capsys.readouterr()
    argv = ["generate", "--prompt", "the earth", "--max-bytes", "8", "--temperature", "0", "--levels", "predicted"]
    assert main([*argv, "--ckpt", str(tmp_path / "head")]) == 0
    assert capsys.readouterr().out.startswith("the earth")
    assert main([*argv, "--ckpt", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err
    assert "needs a model trained with a level head" in err and "Traceback" not in err
