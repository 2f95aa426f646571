"""What a fair comparison needs before its final numbers: the tuning split, named embedded corpora
(the out-of-domain text, the multilingual mix), tokenizers trained on another text, ``aunet
compare --grid`` and per-level learning-rate multipliers."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aunet
from aunet.cli.main import main
from aunet.core.errors import InputError, SpecError
from aunet.jobs.config import load_spec_with_overrides
from aunet.jobs.data.corpus import Document, Split, is_training, is_validation, load_corpus, split
from aunet.jobs.experiments import grid

from conftest import BYTE_SPEC, documents_corpus

# -- splits ----------------------------------------------------------------------------------------


@given(number=st.integers(0, 10_000))
def test_every_document_has_one_role_and_the_tuning_split_never_touches_the_final_one(number: int) -> None:
    final_val, tune_val = is_validation(number, Split.FINAL), is_validation(number, Split.TUNING)
    assert is_training(number, Split.FINAL) == (not final_val)
    assert is_training(number, Split.TUNING) == (not final_val and not tune_val)
    assert not (final_val and tune_val)
    assert is_training(number, Split.FINAL) or not tune_val  # tuning documents come from the training side


def test_the_embedded_corpus_tunes_on_training_books_and_never_reads_the_final_ones() -> None:
    final, tuning = load_corpus(None), load_corpus(None, Split.TUNING)
    final_val = {d.name for d in final.validation}
    tune_val = {d.name for d in tuning.validation}
    assert len(final_val) == len(tune_val) == 8 and not final_val & tune_val
    assert tune_val <= {d.name for d in final.train}  # taken from the training side
    assert not {d.name for d in tuning.train} & (final_val | tune_val)
    assert len(tuning.train) == len(final.train) - 8


@settings(max_examples=30, deadline=None)
@given(lines=st.lists(st.text(alphabet="abc ", min_size=1, max_size=30), min_size=1, max_size=60))
def test_a_small_corpus_is_split_inside_its_documents_without_overlap(lines: list[str]) -> None:
    data = "\n".join(lines).encode() + b"\n"
    doc = [Document("d", data)]
    final, tuning = split(doc, "x"), split(doc, "x", Split.TUNING)
    f_train = b"".join(d.data for d in final.train)
    f_val = b"".join(d.data for d in final.validation)
    t_train = b"".join(d.data for d in tuning.train)
    t_val = b"".join(d.data for d in tuning.validation)
    assert f_train + f_val == data  # the final split is total
    assert data.startswith(t_train + t_val) and len(t_train + t_val) <= len(f_train)  # before the final part


def test_a_run_trains_and_validates_on_the_tuning_split(tmp_path: Path) -> None:
    corpus = documents_corpus(tmp_path / "corpus.jsonl")
    (tmp_path / "byte.toml").write_text(BYTE_SPEC)
    out = tmp_path / "run"
    args = ["train", "--spec", str(tmp_path / "byte.toml"), "--data", str(corpus), "--steps", "2", "--out", str(out)]
    assert main([*args, "--set", "train.data.split=tuning", "--set", "train.sample.bytes=0"]) == 0
    docs = load_corpus(corpus, Split.TUNING)
    final = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"final"' in x]
    assert final and final[-1]["val_bytes"] == sum(len(d.data) for d in docs.validation)


def test_a_streamed_corpus_follows_the_split(tmp_path: Path) -> None:
    from aunet.jobs.data.streaming import StreamSource, validation_documents

    corpus = documents_corpus(tmp_path / "corpus.jsonl")
    source = StreamSource(corpus)
    names = {w: [d.data for d in validation_documents(source, None, w)] for w in Split}
    memory = {w: [d.data for d in load_corpus(corpus, w).validation] for w in Split}
    assert names == memory and names[Split.FINAL] != names[Split.TUNING]


# -- embedded corpora ------------------------------------------------------------------------------


def test_embedded_corpora_are_named_and_an_unknown_name_is_one_line() -> None:
    pydoc = load_corpus("embedded:en_pydoc")
    assert pydoc.source == "embedded:en_pydoc" and len(pydoc.documents) > 300
    assert b"Bible" not in b"".join(d.data for d in pydoc.documents[:50])
    with pytest.raises(
        InputError,
        match="no embedded corpus 'embedded:nope'; the embedded ones: embedded:en_web, embedded:en_pydoc, "
        "embedded:multilingual",
    ):
        load_corpus("embedded:nope")


def test_the_multilingual_mix_holds_languages_out_and_validates_on_the_same_articles() -> None:
    from aunet.jobs.data.corpus import GROUPS, language_of
    from aunet.jobs.inference.suites import udhr_texts

    texts = {t.file.removesuffix(".txt"): t.data for t in udhr_texts()}
    for which in Split:
        mix = load_corpus("embedded:multilingual", which)
        trained = {d.name.split(" ", 1)[1]: d.data for d in mix.train if d.name.startswith("udhr ")}
        assert set(trained) == set(GROUPS["seen"]) | set(GROUPS["low"])  # held-out languages never
        validated = {language_of(d.name): d.data for d in mix.validation if language_of(d.name)}
        assert {stem for _, stem in validated} == {s for group in GROUPS.values() for s in group}
        for (group, stem), data in validated.items():
            whole = texts[stem]
            assert data in whole and not (stem in trained and data in trained[stem])
            if stem in trained:
                assert whole.startswith(trained[stem]) and whole.index(data) >= len(trained[stem])
            share = len(trained.get(stem, b"")) / len(whole)
            assert (share > 0.5) if group == "seen" else (0 < share < 0.15) if group == "low" else share == 0
        english = [d for d in mix.validation if language_of(d.name) is None]
        assert english == list(load_corpus(None, which).validation)


# -- tokenizers trained on another text ------------------------------------------------------------


def test_the_tokenizer_text_is_named_and_checked() -> None:
    def with_tokenizer(trained_on: str) -> str:
        return BYTE_SPEC.replace("[model]", f'[model]\ntokenizer = {{ kind = "bpe", trained_on = "{trained_on}" }}')

    spec = aunet.parse_spec(with_tokenizer("embedded:en_pydoc"), source="s")
    assert spec.model.tokenizer.trained_on == "embedded:en_pydoc"
    with pytest.raises(SpecError, match='model.tokenizer.trained_on: must be "train"'):
        aunet.parse_spec(with_tokenizer("wiki"), source="s")


def test_an_out_of_domain_tokenizer_learns_from_its_own_text() -> None:
    pytest.importorskip("tokenizers", reason="the BPE baseline needs Hugging Face tokenizers (aunet[bpe])")
    from aunet.core.spec import TokenizerKind, TokenizerSpec
    from aunet.jobs.data.bpe import trained_tokenizer

    bible = load_corpus(None)
    small = attrs.evolve(bible, train=bible.train[:3])
    inside = trained_tokenizer(TokenizerSpec(kind=TokenizerKind.BPE, vocab_size=400), small)
    outside = trained_tokenizer(
        TokenizerSpec(kind=TokenizerKind.BPE, vocab_size=400, trained_on="embedded:en_pydoc"), small
    )
    with pytest.raises(InputError, match='trained_on = "embedded:en_web" is the run\'s own corpus'):
        trained_tokenizer(TokenizerSpec(kind=TokenizerKind.BPE, vocab_size=400, trained_on="embedded:en_web"), small)
    verse = b"And God said, Let there be light: and there was light."
    code = b"Return the number of bytes in the buffer, or raise ValueError if closed."
    assert len(inside.encode(verse)) < len(outside.encode(verse))
    assert len(outside.encode(code)) < len(inside.encode(code))


# -- compare --grid --------------------------------------------------------------------------------


def test_grid_axes_parse_values_with_lists_and_name_their_variants() -> None:
    axes = [grid.Axis.parse("train.lr=1e-3,2e-3"), grid.Axis.parse("b:train.level_lr=[1,1],[2,1]")]
    assert axes[1] == grid.Axis("train.level_lr", ("[1,1]", "[2,1]"), "b")
    found = grid.variants(["a", "b"], axes)
    assert [v.name for v in found] == [
        "a.lr-1e-3",
        "a.lr-2e-3",
        "b.lr-1e-3.level_lr-_1_1_",
        "b.lr-1e-3.level_lr-_2_1_",
        "b.lr-2e-3.level_lr-_1_1_",
        "b.lr-2e-3.level_lr-_2_1_",
    ]
    assert found[3].overrides == ("train.lr=1e-3", "train.level_lr=[2,1]")
    rows = [{"spec": v.name, "val_bpb": bpb} for v, bpb in zip(found, [3.0, 2.5, 2.0, float("nan"), 1.9, 2.2])]
    best = grid.best(rows, found)
    assert best["a"]["best"]["overrides"] == ["train.lr=2e-3"]
    assert best["b"]["best"]["val_bpb"] == 1.9 and len(best["b"]["tried"]) == 4
    for bad in ("train.lr", "train.lr=", ":train.lr=1", "train.lr=1,1"):
        with pytest.raises(InputError, match="--grid"):
            grid.Axis.parse(bad)
    with pytest.raises(InputError, match="not among the specs"):
        grid.variants(["a"], [grid.Axis.parse("zz:train.lr=1")])


def test_compare_grid_on_the_tuning_split_writes_the_tuned_specs(tmp_path: Path, capsys) -> None:
    corpus = documents_corpus(tmp_path / "corpus.jsonl")
    (tmp_path / "byte.toml").write_text(BYTE_SPEC)
    out = tmp_path / "cmp"
    args = ["compare", str(tmp_path / "byte.toml"), "--steps", "2", "--turn-steps", "2", "--data", str(corpus)]
    grid_args = ["--grid", "train.lr=1e-3,3e-2", "--split", "tuning", "--out", str(out), "--device", "cpu"]
    assert main([*args, *grid_args]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["split"] == "tuning"
    assert report["rows"][0]["val_bytes"] == sum(len(d.data) for d in load_corpus(corpus, Split.TUNING).validation)
    rows = {r["spec"]: r["val_bpb"] for r in report["rows"]}
    assert set(rows) == {"byte-small.lr-1e-3", "byte-small.lr-3e-2"}
    choices = json.loads((out / "tuned" / "choices.json").read_text())["specs"]["byte-small"]
    winner = min(rows, key=rows.get)
    assert choices["best"]["run"] == winner
    tuned = aunet.load_spec(str(out / "tuned" / "byte-small.toml"))
    assert (
        tuned.name == "byte-small"
        and tuned.train.lr == {"byte-small.lr-1e-3": 1e-3, "byte-small.lr-3e-2": 3e-2}[winner]
    )
    assert "| byte-small |" in capsys.readouterr().out


# -- per-level learning rates ----------------------------------------------------------------------


def test_every_parameter_of_every_shipped_hierarchy_has_a_level() -> None:
    from aunet.core.model import build_model, parameter_level
    from aunet.core.resources import shipped_spec_names

    ngram = load_spec_with_overrides("aunet2-tiny", ["model.ngram={ sizes = [3, 4], buckets = 64 }"])
    # blt-tiny's entropy splitter needs a trained model; its n-gram tables are ngram's.
    named = [n for n in shipped_spec_names() if not n.startswith("paper/") and n != "blt-tiny"]
    for spec in [*(aunet.load_spec(n) for n in named), ngram]:
        model = build_model(spec, device="meta")
        levels = {n: parameter_level(n, spec.depth) for n, _ in model.named_parameters()}
        assert set(levels.values()) <= set(range(spec.depth + 1))
        assert {levels[n] for n in levels if n.startswith(("encoders", "decoders", "trunk"))} == set(
            range(spec.depth + 1)
        )
    assert parameter_level("module._orig_mod.trunk.blocks.0.attn.wq.weight", 2) == 2
    with pytest.raises(ValueError, match="belongs to no level"):
        parameter_level("mystery.weight", 1)


def test_level_multipliers_scale_each_levels_rate() -> None:
    from aunet.core.model import build_model, parameter_level
    from aunet.jobs.train.trainer import Optimization

    spec = aunet.load_spec("aunet3-tiny")
    spec = attrs.evolve(spec, train=attrs.evolve(spec.train, level_lr=(1.0, 0.5, 0.25)))
    model = build_model(spec, device="meta")
    optimization = Optimization(model, spec.train)
    lr = optimization.set_lr(1000, 0.0)
    owner = {id(p): parameter_level(n, 2) for n, p in model.named_parameters()}
    for group in optimization.optimizer.param_groups:
        for p in group["params"]:
            assert group["lr"] == pytest.approx(lr * spec.train.level_lr[owner[id(p)]])
    assert sum(len(g["params"]) for g in optimization.optimizer.param_groups) == len(list(model.parameters()))
    plain = Optimization(build_model(aunet.load_spec("aunet3-tiny"), device="meta"), spec.train.__class__())
    assert len(plain.optimizer.param_groups) == 2  # no multipliers: the two groups of before
    wrong = load_spec_with_overrides("aunet3-tiny", ["train.level_lr=[1,0.5]"])
    assert [(i.path, i.message[:27]) for i in wrong.check_model()] == [
        ("train.level_lr", "2 multipliers for 3 levels;")
    ]


def test_eval_reports_the_multilingual_groups_and_the_tuning_split(tmp_path: Path, capsys) -> None:
    corpus = documents_corpus(tmp_path / "corpus.jsonl")
    (tmp_path / "byte.toml").write_text(BYTE_SPEC)
    run = tmp_path / "run"
    train = ["train", "--spec", str(tmp_path / "byte.toml"), "--data", str(corpus), "--out", str(run)]
    assert main([*train, "--steps", "1", "--set", "train.sample.bytes=0"]) == 0
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run), "--suite", "multilingual", "--only", "en,fra,glg,dan", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["file"], r["group"]) for r in report["languages"]] == [
        ("en_web-validation", "english"),  # English is the Bible's validation books, not its UDHR
        ("fra", "seen"),
        ("glg", "held-out"),
        ("dan", "low"),
    ]
    groups = {g["group"]: g for g in report["groups"]}
    assert {k: g["texts"] for k, g in groups.items()} == {"english": 1, "seen": 1, "held-out": 1, "low": 1}
    assert groups["seen"]["bpb"] == report["languages"][1]["bpb"]
    assert main(["eval", "--ckpt", str(run), "--split", "tuning", "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["documents"] == [d.name for d in load_corpus(corpus, Split.TUNING).validation]
    # The recipe's optimizer groups follow train.level_lr, so a resume cannot change them.
    more = ["--resume", "--steps", "2", "--set", "train.level_lr=[2]"]
    assert main(["train", "--out", str(run), *more]) == 2
    assert "cannot change on resume" in capsys.readouterr().err


BPE_SMALL = BYTE_SPEC.replace('name = "byte-small"', 'name = "bpe-small"').replace(
    "[model]\ncontext = 128", '[model]\ncontext = 64\ntokenizer = { kind = "bpe", vocab_size = 300 }'
)


@pytest.mark.parametrize("spec", [BYTE_SPEC, BPE_SMALL], ids=["bytes", "bpe"])
def test_the_suites_score_flat_byte_and_bpe_runs(spec: str, tmp_path: Path, capsys) -> None:
    """The AU-Net side is in tests/test_character.py, tests/test_robustness.py and above."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (the 'eval' extra)")
    pytest.importorskip("tokenizers", reason="the BPE baseline needs Hugging Face tokenizers (aunet[bpe])")
    from aunet.integrations.lm_eval.adapter import evaluate_tasks, metric_rows

    corpus = documents_corpus(tmp_path / "corpus.jsonl")
    (tmp_path / "spec.toml").write_text(spec)
    run = tmp_path / "run"
    train = ["train", "--spec", str(tmp_path / "spec.toml"), "--data", str(corpus), "--out", str(run)]
    assert main([*train, "--steps", "1", "--set", "train.sample.bytes=0"]) == 0
    done = evaluate_tasks(run, ["char_spell", "robust_space"], out=tmp_path / "out", limit=2, batch_size=4)
    rows = {(task, metric): value for task, metric, value, _ in metric_rows(done.results)}
    assert 0 <= rows[("char_spell", "acc")] <= 1 and 0 < rows[("robust_space", "bits_per_byte")] < 30
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run), "--suite", "multilingual", "--only", "kat", "--json"]) == 0
    (georgian,) = json.loads(capsys.readouterr().out)["languages"]
    assert georgian["group"] == "held-out" and 0 < georgian["bpb"] < 30
