"""BLT's hash n-gram byte embeddings (``model.ngram``, docs/method.md section 11): the hash against
a plain-Python oracle, nothing across a row start or a BOS, one id at a time equal to a whole row,
the model causal and batch independent with them, cached generation equal to the full forward,
the spec option read strictly, the accounting, the trainer and the Hugging Face export."""

from __future__ import annotations

import json
import zipfile

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aunet
from aunet.core.accounting import FORMULAS, account
from aunet.core.convert import dump_spec, parse_spec
from aunet.core.embedding import ABSENT, BASE, MODULUS, NgramEmbedding, ngram_hash
from aunet.core.errors import SpecError
from aunet.core.model import BOS, EOS, IGNORE, PAD, ShapeMode, build_model
from aunet.core.resources import spec_path
from aunet.core.spec import NgramSpec, TokenizerKind, TokenizerSpec
from aunet.testing import assert_causal, assert_matches_teacher_forcing, documents, pack, small_specs
from aunet.testing.models import ngram_specs

from conftest import MODEL_EXAMPLES, run_cli, train_small_run

T = 48
#: Ids as rows hold them: bytes, with BOS, EOS and PAD among them.
IDS = st.one_of(st.integers(0, 255), st.sampled_from([BOS, EOS, PAD]))


def with_ngram(spec, ngram: NgramSpec):
    return attrs.evolve(spec, model=attrs.evolve(spec.model, ngram=ngram))


def make(spec):
    torch.manual_seed(0)
    return build_model(spec).eval()


def revealing(sizes: tuple[int, ...], buckets: int) -> NgramEmbedding:
    """An n-gram embedding whose output says which rows it summed: table k's row r is the unit
    vector k x buckets + r."""
    module = NgramEmbedding(sizes=sizes, buckets=buckets, dim=len(sizes) * buckets)
    with torch.no_grad():
        for k, n in enumerate(sizes):
            table = module.tables[str(n)].weight
            table.zero_()
            table[:, k * buckets : (k + 1) * buckets] = torch.eye(buckets)
    return module


def expected_rows(row: list[int], sizes: tuple[int, ...], buckets: int) -> torch.Tensor:
    """(T, K x buckets) the oracle: at t, for each n whose n-gram lies within the row and has no
    BOS after its first id, a one at n's table and the row ``ngram_hash`` picks."""
    out = torch.zeros(len(row), len(sizes) * buckets)
    for t in range(len(row)):
        for k, n in enumerate(sizes):
            gram = row[t - n + 1 : t + 1] if t - n + 1 >= 0 else None
            if gram is None or BOS in gram[1:]:
                continue
            out[t, k * buckets + ngram_hash(gram) % buckets] += 1
    return out


# -- the hash and what it picks ------------------------------------------------------------------


def test_the_hash_is_horners_rolling_polynomial() -> None:
    assert ngram_hash([1, 2, 3]) == (1 * BASE**2 + 2 * BASE + 3) % MODULUS
    assert ngram_hash([BOS, 0, 255]) == (BOS * BASE**2 + 255) % MODULUS
    assert ngram_hash([7]) == 7 and ngram_hash([]) == 0
    # Every product stays exact in int64: ids below 2^20 times residues below 2^31.
    assert (1 << 20) * MODULUS < 1 << 63


@given(
    rows=st.lists(st.lists(IDS, min_size=1, max_size=30), min_size=1, max_size=3),
    ngram=ngram_specs(max_size=6, max_buckets=12),
)
def test_rows_picked_equal_the_plain_python_oracle(rows, ngram: NgramSpec) -> None:
    module = revealing(ngram.sizes, ngram.buckets)
    width = max(len(r) for r in rows)
    tokens = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    with torch.no_grad():
        out = module(tokens)  # (B, T, K x buckets)
    for b, row in enumerate(rows):
        padded = row + [PAD] * (width - len(row))
        torch.testing.assert_close(out[b], expected_rows(padded, ngram.sizes, ngram.buckets), rtol=0, atol=0)


def test_an_ngram_across_a_bos_or_the_row_start_adds_nothing() -> None:
    a, b, c = ord("a"), ord("b"), ord("c")
    module = revealing((2, 3), 64)
    with torch.no_grad():
        out = module(torch.tensor([[BOS, a, b, BOS, c]]))[0]  # (T, 2 x 64)
    bigrams, trigrams = out[:, :64].sum(1).tolist(), out[:, 64:].sum(1).tolist()
    assert bigrams == [0, 1, 1, 0, 1]  # BOS at 0: before the row; b BOS: across the second document's start
    assert trigrams == [0, 0, 1, 0, 0]  # only BOS a b lies within one document and the row
    assert out[4, ngram_hash([BOS, c]) % 64] == 1  # a BOS may be an n-gram's first id


@given(
    row=st.lists(IDS, min_size=1, max_size=30),
    ngram=ngram_specs(max_size=6, max_buckets=12),
    cut=st.integers(0, 30),
)
def test_one_id_at_a_time_equals_the_whole_row(row, ngram: NgramSpec, cut: int) -> None:
    """A prefix at once (right-padded beside a longer row), then one id at a time with the carried
    ids (``recent``, ``push``), as decoding does: the rows of the whole row, exactly."""
    module = revealing(ngram.sizes, ngram.buckets)
    cut = min(cut, len(row) - 1) + 1
    whole = torch.tensor([row])
    with torch.no_grad():
        expected = module(whole)[0]
        prompt = torch.tensor([row[:cut] + [PAD] * 5, [EOS] * (cut + 5)])  # (2, cut + 5): row 0 right-padded
        got = [module(prompt)[0, :cut]]
        recent = module.recent(prompt, torch.tensor([cut, cut + 5]))
        assert recent[0].tolist() == ([ABSENT] * module.lookback + row[:cut])[-module.lookback :]
        for x in row[cut:]:
            token = torch.tensor([x, 65])
            got.append(module(token[:, None], recent)[0])
            recent = module.push(recent, token, torch.tensor([True, False]))
        assert recent[1].tolist() == [EOS] * module.lookback  # a row not active keeps its ids
    torch.testing.assert_close(torch.cat(got), expected, rtol=0, atol=0)


# -- the model with them -------------------------------------------------------------------------


def specs_with_ngrams(**kwargs):
    return st.tuples(small_specs(**kwargs), ngram_specs()).map(lambda p: with_ngram(*p))


model_settings = settings(max_examples=MODEL_EXAMPLES, deadline=None)


@model_settings
@given(spec=specs_with_ngrams(), docs=documents(), new=st.binary(min_size=T, max_size=T), t=st.integers(0, T - 2))
def test_changing_bytes_after_t_changes_no_logit_up_to_t(spec, docs, new: bytes, t: int) -> None:
    assert_causal(make(spec), docs, new, t, T)


@model_settings
@given(spec=specs_with_ngrams(), docs=documents(), other=documents())
def test_batch_items_are_independent(spec, docs, other) -> None:
    model = make(spec)
    row, lv = pack(spec, docs, T)
    row2, lv2 = pack(spec, other, T)
    with torch.no_grad():
        a = model(torch.stack([row, row2]), torch.stack([lv, lv2])).logits
        alone = model(row[None], lv[None]).logits
    torch.testing.assert_close(a[0], alone[0], rtol=1e-5, atol=1e-5)


def test_a_packed_document_embeds_and_predicts_as_it_would_alone() -> None:
    """The n-grams keep to documents whatever ``doc_mask`` says: with it, the logits do too."""
    spec = with_ngram(aunet.load_spec(spec_path("aunet2-tiny")), NgramSpec(buckets=256))
    model = make(spec)
    first, second = b"In the beginning God created.", b"Jesus wept. And the people saw."
    tokens, levels = pack(spec, [first, second], 2 + len(first) + 2 + len(second))
    alone, alone_levels = pack(spec, [second], 2 + len(second))
    with torch.no_grad():
        both = model.embed_tokens(tokens[None])[0, len(first) + 2 :]
        torch.testing.assert_close(both, model.embed_tokens(alone[None])[0], rtol=0, atol=0)
        packed = model(tokens[None], levels[None]).logits[0, len(first) + 2 :]
        single = model(alone[None], alone_levels[None]).logits[0]
    torch.testing.assert_close(packed, single, rtol=1e-4, atol=1e-4)


@settings(max_examples=MODEL_EXAMPLES, deadline=None)
@given(
    spec=specs_with_ngrams(context=256),
    prompts=st.lists(st.one_of(st.binary(max_size=30), st.text("ab c.", max_size=30).map(str.encode)), max_size=3),
    new=st.integers(1, 16),
)
def test_cached_greedy_decoding_equals_the_full_forward(spec, prompts, new: int) -> None:
    """Rows of different prompt lengths (empty ones too) decode together, right-padded."""
    assert_matches_teacher_forcing(make(spec), prompts or [b""], new)


def test_shipped_spec_with_ngrams_decodes_exactly() -> None:
    model = make(with_ngram(aunet.load_spec(spec_path("aunet3-tiny")), NgramSpec(buckets=512)))
    assert_matches_teacher_forcing(model, [b"In the beginning God created", b"", b"supercalifragilistic" * 2], 40)


def test_the_tables_learn_and_the_loss_backpropagates() -> None:
    spec = with_ngram(aunet.load_spec(spec_path("byte-tiny")), NgramSpec(sizes=(3, 5), buckets=32))
    model = build_model(spec)
    tokens = aunet.encode(b"abcabcabc", eos=True)
    targets = torch.cat([tokens[1:], torch.tensor([IGNORE])])
    out = model(tokens[None], torch.zeros_like(tokens)[None], targets[None])
    out.loss.backward()
    for n in ("3", "5"):
        grad = model.ngram.tables[n].weight.grad
        assert grad is not None and bool(grad.abs().sum(1).gt(0).any())


def test_without_the_option_the_model_is_as_before() -> None:
    spec = aunet.load_spec(spec_path("aunet2-tiny"))
    model = make(spec)
    assert model.ngram is None and not any(name.startswith("ngram.") for name, _ in model.named_parameters())
    tokens = aunet.encode(b"Jesus wept.")[None]
    assert torch.equal(model.embed_tokens(tokens), model.embed(tokens))


def test_the_tables_are_embeddings_the_trainer_does_not_decay() -> None:
    from aunet.jobs.config import TrainSpec
    from aunet.jobs.train.trainer import parameter_groups

    model = make(with_ngram(aunet.load_spec(spec_path("byte-tiny")), NgramSpec(buckets=16)))
    decayed, plain = parameter_groups(model, TrainSpec())
    tables = {id(t.weight) for t in model.ngram.tables.values()}
    assert tables <= {id(p) for p in plain["params"]} and not tables & {id(p) for p in decayed["params"]}


@pytest.mark.slow
def test_compiles_with_fullgraph_on_the_static_path() -> None:
    spec = with_ngram(aunet.load_spec(spec_path("aunet3-tiny")), NgramSpec(buckets=128))
    model = make(spec)
    tokens, levels = pack(spec, [b"In the beginning God created the heavens. " * 2, b"Amen."], 96)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(tokens[None], levels[None]).logits, model(tokens[None], levels[None]).logits, rtol=1e-4, atol=1e-4
        )


# -- the spec option -----------------------------------------------------------------------------

BYTES = '[model]\nngram = NGRAM\n[[levels]]\ndim = 16\nstage = { kind = "transformer", layers = 1, head_dim = 8 }\n'


def test_the_option_round_trips_and_its_absence_dumps_as_before() -> None:
    spec = parse_spec(BYTES.replace("NGRAM", "{ sizes = [3, 5], buckets = 4096 }"))
    assert spec.model.ngram == NgramSpec(sizes=(3, 5), buckets=4096)
    assert parse_spec(dump_spec(spec)) == spec
    assert "[model.ngram]\nsizes = [3, 5]\nbuckets = 4096\n" in dump_spec(spec)
    plain = parse_spec(BYTES.replace("ngram = NGRAM\n", ""))
    assert plain.model.ngram is None and "ngram" not in dump_spec(plain)
    assert parse_spec(BYTES.replace("NGRAM", "{ buckets = 8 }")).model.ngram.sizes == (3, 4, 5, 6, 7, 8)  # BLT's
    assert parse_spec(BYTES.replace("NGRAM", '"none"')).model.ngram is None


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ("{ sizes = [], buckets = 8 }", "model.ngram.sizes", "at least one n-gram length"),
        ("{ sizes = [1, 2], buckets = 8 }", "model.ngram.sizes", "start at 2 (1 is the byte embedding itself), got 1"),
        ("{ sizes = [3, 65], buckets = 8 }", "model.ngram.sizes", "at most 64, got 65"),
        ("{ sizes = [4, 3], buckets = 8 }", "model.ngram.sizes", "increasing without repeats"),
        ("{ sizes = [3, 3], buckets = 8 }", "model.ngram.sizes", "got [3, 3]"),
        ('{ sizes = ["3"], buckets = 8 }', "model.ngram.sizes[0]", "expected int, got '3'"),
        ("{ sizes = 3, buckets = 8 }", "model.ngram.sizes", "expected an array, got 3"),
        ("{ sizes = [3] }", "model.ngram.buckets", "missing (required)"),
        ("{ buckets = 0 }", "model.ngram.buckets", "must be at least 1, got 0"),
        ("{ buckets = 16777217 }", "model.ngram.buckets", "at most 16,777,216 (2^24 rows per table)"),
        (
            "{ buckets = 8, size = [3] }",
            "model.ngram.size",
            "unknown key; known: buckets, sizes; did you mean 'sizes'?",
        ),
        ("[3, 4]", "model.ngram", "expected a table, got an array"),
    ],
)
def test_bad_options_name_their_path_and_what_is_right(value: str, path: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(BYTES.replace("NGRAM", value))
    issues = [(i.path, i.message) for i in info.value.issues]
    assert any(p == path and message in m for p, m in issues), issues
    assert all("\n" not in m for _, m in issues)


def test_a_bpe_model_refuses_the_option_with_a_spec_issue() -> None:
    spec = parse_spec(BYTES.replace("NGRAM", "{ buckets = 8 }"))
    bpe = attrs.evolve(
        spec,
        model=attrs.evolve(spec.model, tokenizer=TokenizerSpec(kind=TokenizerKind.BPE, bytes_per_token=4.0)),
    )
    issues = bpe.check_model()
    assert [i.path for i in issues] == ["model.ngram"]
    assert "BPE" in issues[0].message and "drop ngram" in issues[0].message
    with pytest.raises(SpecError, match="model.ngram"):
        build_model(bpe)


# -- accounting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["byte-tiny", "aunet2-tiny", "aunet3-tiny"])
def test_the_tables_are_counted_apart_and_their_sums_in_flops_per_byte_all(name: str) -> None:
    plain = aunet.load_spec(spec_path(name))
    ngram = NgramSpec(sizes=(3, 4, 6), buckets=100)
    spec = with_ngram(plain, ngram)
    before, after = account(plain), account(spec)
    d0 = spec.levels[0].dim
    tables = after.parameters_by_component["ngram_embeddings"]
    assert tables == 3 * 100 * d0 == sum(p.numel() for p in build_model(spec).ngram.parameters())
    assert after.parameters == before.parameters + tables == sum(p.numel() for p in build_model(spec).parameters())
    assert after.flops_per_byte == before.flops_per_byte  # embedding parameters: no 6 x N term
    assert after.flops_per_byte_all == pytest.approx(before.flops_per_byte_all + 3 * 3 * d0)
    assert after.reference_flops_per_byte == before.reference_flops_per_byte
    state = after.memory[0].state_bytes - before.memory[0].state_bytes
    assert state == 16 * tables  # weights, gradients and AdamW moments, as every parameter
    assert "3 x len(ngram.sizes) x dim_0" in FORMULAS["flops_per_byte_all"]
    assert "ngram_embeddings" not in before.parameters_by_component


def test_spec_show_lists_the_tables(tmp_path) -> None:
    path = tmp_path / "ngram.toml"
    path.write_text(BYTES.replace("NGRAM", "{ sizes = [3, 4], buckets = 10 }"))
    shown = run_cli("spec", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "ngram_embeddings" in shown.stdout and "output head and n-gram sums" in shown.stdout
    sizes = json.loads(run_cli("spec", "show", str(path), "--json").stdout)
    assert sizes["parameters_by_component"]["ngram_embeddings"] == 2 * 10 * 16


# -- the Hugging Face export ---------------------------------------------------------------------


def test_an_export_with_ngrams_scores_and_generates_as_aunet(tmp_path) -> None:
    pytest.importorskip("transformers", reason="the Hugging Face export needs transformers (aunet[hf])")
    from transformers import AutoModelForCausalLM

    run = train_small_run(tmp_path, context=96, steps=2, overrides=("model.ngram={ sizes = [2, 3, 5], buckets = 64 }",))
    result = run_cli("export", "--ckpt", str(run), "--out", str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    names = zipfile.ZipFile(tmp_path / "hf" / "aunet-runtime.zip").namelist()
    assert "aunet/core/embedding.py" in names  # the runtime holds the n-gram module
    ours = aunet.load_run(run).model
    assert ours.ngram is not None
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    text = b"In the beginning God"
    tokens = aunet.encode(text)[None]
    with torch.no_grad():
        expected = ours(tokens, aunet.compute_levels(ours.spec, text)[None], shapes=ShapeMode.EAGER).logits
        torch.testing.assert_close(model(tokens).logits, expected, atol=1e-5, rtol=0)
    out = model.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=16, do_sample=False)
    new = out[0, tokens.shape[1] :].tolist()
    new = new[: new.index(EOS)] if EOS in new else new
    assert bytes(new) == aunet.generate(ours, [text], 16)[0]
