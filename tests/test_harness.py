"""The lm-evaluation-harness adapter (``aunet.integrations.lm_eval.adapter``): every figure it hands the harness is
checked against aunet's own forward, evaluation and generation, and a local multiple-choice task
run through ``lm_eval.simple_evaluate`` gives the accuracy computed here from the model's own
log-probabilities. Skipped, with a reason, where the ``eval`` extra is not installed."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (the 'eval' extra)")

import torch
from lm_eval.api.instance import Instance

import aunet
from aunet.core.encoding import splitter_encoding
from aunet.core.errors import InputError
from aunet.core.model import ShapeMode
from aunet.core.tokens import BOS, PAD
from aunet.integrations.lm_eval import adapter as harness
from aunet.integrations.lm_eval.model import _checked_gen_kwargs

from conftest import run_cli

CONTEXT = 128  # the test model's context, in positions with BOS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for three steps on a shrunk aunet2-tiny (as tests/test_devices.py trains one):
    a real checkpoint folder, cheap on two cores."""
    from tests.conftest import train_small_run

    return train_small_run(tmp_path_factory.mktemp("harness"), context=CONTEXT, steps=3)


@pytest.fixture(scope="module")
def lm(run_dir: Path):
    return harness.make_lm(ckpt=run_dir, batch_size=4)


def request(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def direct(model, context: bytes, continuation: bytes) -> tuple[float, bool]:
    """log p(continuation | BOS + context) and whether it is greedy, from one plain forward."""
    data = context + continuation
    tokens, levels = aunet.encode(data), aunet.compute_levels(model.spec, data)  # (T,) each
    with torch.no_grad():
        logits = model(tokens[None, :-1], levels[None, :-1], shapes=ShapeMode.EAGER, doc_mask=False).logits[0]
    n = len(continuation)
    logp = logits.log_softmax(-1)[-n:]  # (n, V): the positions that predict the continuation
    targets = tokens[-n:]
    masked = logits[-n:].clone()
    masked[:, [BOS, PAD]] = float("-inf")
    return float(logp.gather(-1, targets[:, None]).sum()), bool((masked.argmax(-1) == targets).all())


# -- a local multiple-choice task through lm_eval.simple_evaluate ----------------------------------

QUESTIONS = [
    ("Where does the sun rise?", ["in the east", "in the west", "under the sea"], 0),
    ("What do bees make?", ["honey", "bricks", "thunder"], 0),
    ("What colour is fresh snow?", ["green", "white", "purple"], 1),
    ("Which animal barks?", ["a cat", "a fish", "a dog"], 2),
    ("What do we drink when thirsty?", ["water", "sand", "smoke"], 0),
    ("How many legs has a spider?", ["six", "eight", "two"], 1),
    ("What falls from clouds?", ["rain", "stones", "bread"], 0),
    ("Which is a French pastry?", ["a croissant", "a café crème brûlée", "a bagel"], 0),
    ("What do you read?", ["a spoon", "a book", "a shoe"], 1),
    ("Where do fish live?", ["in trees", "in water", "in ovens"], 1),
    ("What is ice made of?", ["frozen water", "hot sand", "dry leaves"], 0),
    ("Which word means naïve?", ["innocent", "cunning", "wicked"], 0),
]


def write_task(folder: Path) -> tuple[Path, list[dict]]:
    """A JSONL dataset and the task YAML that reads it, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = [{"question": q, "choices": c, "gold": g} for q, c, g in QUESTIONS]
    data = folder / "mc.jsonl"
    data.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    (folder / "aunet_local_mc.yaml").write_text(
        "task: aunet_local_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n  - metric: acc_bytes\n",
        encoding="utf-8",
    )
    return folder, docs


def test_a_local_multiple_choice_task_scores_as_the_model_does(run_dir: Path, tmp_path: Path) -> None:
    tasks, docs = write_task(tmp_path / "tasks")
    out = tmp_path / "out"
    results = harness.run_harness(run_dir, ["aunet_local_mc"], out=out, include_path=tasks, batch_size=4)
    (written,) = out.glob("*/results_*.json")  # out/<checkpoint as given>/results_<date>.json, as lm-eval writes
    saved = json.loads(written.read_text())
    assert saved["results"] == results["results"]
    figures = saved["results"]["aunet_local_mc"]

    (samples,) = out.glob("*/samples_aunet_local_mc_*.jsonl")
    logged = {
        (a["arg_0"], a["arg_1"]): float(r[0][0])
        for line in samples.read_text().splitlines()
        for a, r in zip(json.loads(line)["arguments"].values(), json.loads(line)["resps"])
    }

    model = aunet.load_run(run_dir).model
    acc = acc_norm = acc_bytes = 0
    for d in docs:
        context = f"Question: {d['question']}\nAnswer:"
        lls = [direct(model, context.encode(), f" {c}".encode())[0] for c in d["choices"]]
        assert [logged[(context, f" {c}")] for c in d["choices"]] == pytest.approx(lls, abs=1e-4)
        # lm-eval's acc_norm divides by the choice's length in characters, without the " "
        # before it (lm_eval/api/task.py, process_results); acc_bytes by its UTF-8 bytes.
        chars = [ll / len(c) for ll, c in zip(lls, d["choices"])]
        utf8 = [ll / len(c.encode()) for ll, c in zip(lls, d["choices"])]
        acc += max(range(3), key=lls.__getitem__) == d["gold"]
        acc_norm += max(range(3), key=chars.__getitem__) == d["gold"]
        acc_bytes += max(range(3), key=utf8.__getitem__) == d["gold"]
    assert figures["acc,none"] == acc / len(docs)
    assert figures["acc_norm,none"] == acc_norm / len(docs)
    assert figures["acc_bytes,none"] == acc_bytes / len(docs)
    assert figures["sample_len"] == len(docs) and "acc_stderr,none" in figures
    assert saved["config"]["aunet_step"] == 3 and saved["config"]["aunet_truncated_requests"] == 0


# -- the three requests, one by one ----------------------------------------------------------------


def test_lm_eval_builds_it_by_name(run_dir: Path) -> None:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import get_model

    cls = harness.AUNetLM  # defined, and registered, on first use
    assert get_model("aunet") is cls and issubclass(cls, LM)
    built = cls.create_from_arg_string(f"ckpt={run_dir},batch_size=4", {"device": "cpu", "max_batch_size": None})
    assert built.batch_size == 4 and built.run.step == 3 and built.device.type == "cpu"


def test_loglikelihood_is_the_forward_s_and_greedy_means_argmax(lm) -> None:
    from aunet.jobs.inference.generate import generate_recompute

    model = lm.model
    context = b"In the beginning"
    greedy = generate_recompute(model, [context], 6)[0]  # the model's own greedy bytes (teacher-forced)
    assert greedy
    other = b"Q" if greedy[:1] != b"Q" else b"Z"
    cases = [
        (context, b" God created"),
        (b"", b"The earth"),
        (b"Caf\xc3\xa9", b" cr\xc3\xa8me"),
        (context, greedy),
        (context, other + greedy[1:]),
    ]
    got = lm.loglikelihood(
        [
            request("loglikelihood", c.decode("utf-8", "surrogateescape"), x.decode("utf-8", "surrogateescape"))
            for c, x in cases
        ]
    )
    for (c, x), (logprob, is_greedy) in zip(cases, got):
        expected, expected_greedy = direct(model, c, x)
        assert logprob == pytest.approx(expected, abs=1e-4) and is_greedy == expected_greedy
    assert got[3][1] is True and got[4][1] is False


def test_results_do_not_depend_on_the_batch(lm) -> None:
    one, five = harness.make_lm(model=lm.model, batch_size=1), harness.make_lm(model=lm.model, batch_size=5)
    pairs = [
        ("In the beginning", " God"),
        ("", "x"),
        ("The earth was", " empty and void"),
        ("a" * 90, " b"),
        ("God said", ","),
        ("Let there be", " light."),
        ("", "In the beginning God created"),
    ]
    requests = [request("loglikelihood", c, x) for c, x in pairs]
    for (a, ga), (b, gb) in zip(one.loglikelihood(requests), five.loglikelihood(requests)):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb
    texts = [request("loglikelihood_rolling", t) for t in ("short", "In the beginning. " * 12, "x" * 129, "")]
    for t, a, b in zip(texts, one.loglikelihood_rolling(texts), five.loglikelihood_rolling(texts)):
        # Sums over hundreds of bytes: float32 rounding of differently shaped products adds up
        # (about 1e-7 a byte), so 1e-5 per byte.
        assert a == pytest.approx(b, abs=1e-5 * max(1, len(t.args[0])))


def test_a_long_context_is_cut_on_the_left_and_counted(lm) -> None:
    model = lm.model
    context, continuation = ("In the beginning God created the heavens. " * 6).encode(), b" And the earth"
    assert len(context) + len(continuation) > CONTEXT
    before, whole_before = lm.truncated, lm.continuation_truncated
    with pytest.warns(RuntimeWarning, match="1 of 1 loglikelihood requests are longer than the model's context"):
        ((logprob, _),) = lm.loglikelihood([request("loglikelihood", context.decode(), continuation.decode())])
    kept = (context + continuation)[-CONTEXT:]  # BOS + 127 bytes in, 128 bytes predicted
    assert logprob == pytest.approx(direct(model, kept[: -len(continuation)], continuation)[0], abs=1e-4)
    assert lm.truncated == before + 1 and lm.truncated_bytes >= len(context) + len(continuation) - CONTEXT

    alone = bytes(range(65, 91)) * 8  # a continuation longer than the context on its own
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ((logprob, _),) = lm.loglikelihood([request("loglikelihood", "ctx", alone.decode())])
    notes = [str(w.message) for w in caught]
    assert len(notes) == 2 and "dropped 83 bytes from the left" in notes[0]
    assert "1 of 1 loglikelihood continuations are longer than the model's context" in notes[1]
    assert logprob == pytest.approx(direct(model, b"", alone[-CONTEXT:])[0], abs=1e-4)
    assert lm.truncated == before + 2 and lm.continuation_truncated == whole_before + 1


def test_rolling_loglikelihood_is_aunet_eval_without_the_eos(lm) -> None:
    """What is compared: (1) the rolling log-likelihood equals a direct computation over the
    windows of ``evaluation_rows`` (consecutive, disjoint, ``context`` positions, the first with
    BOS); (2) ``aunet.jobs.inference.evaluate.evaluate`` on the same single document (BOS + bytes + EOS)
    gives nll_bits = (-rolling - log p(EOS | its window)) / ln 2 over the same 300 bytes, so its
    bits per byte is the harness's (from lm-eval's own ``bits_per_byte``) plus the EOS term."""
    from lm_eval.api.metrics import bits_per_byte

    from aunet.jobs.data.corpus import Document
    from aunet.jobs.data.packing import encode_documents
    from aunet.jobs.inference.evaluate import evaluate

    model = lm.model
    text = ("In the beginning God created the heavens and the earth. " * 6)[:300].encode()
    (rolling,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", text.decode())])

    tokens, levels = aunet.encode(text, eos=True), aunet.compute_levels(model.spec, text, eos=True)  # (302,)
    windows, eos = 0.0, None
    with torch.no_grad():
        for start in range(0, len(text) + 1, CONTEXT):  # every byte and the EOS, each once
            end = min(start + CONTEXT, len(text) + 1)
            out = model(tokens[None, start:end], levels[None, start:end], shapes=ShapeMode.EAGER, doc_mask=False)
            logits = out.logits[0]  # (end - start, V)
            logp = logits.log_softmax(-1).gather(-1, tokens[start + 1 : end + 1, None])[:, 0]
            if end == len(text) + 1:  # the last window predicts the EOS last
                eos, logp = float(logp[-1]), logp[:-1]
            windows += float(logp.sum())
    assert rolling == pytest.approx(windows, abs=1e-4)

    encoding = splitter_encoding(model.spec)
    result = evaluate(model, encoding, encode_documents([Document("t", text)], encoding), context=CONTEXT)
    assert result.bytes == len(text)
    assert result.nll_bits * math.log(2) == pytest.approx(-rolling - eos, rel=1e-5)
    harness_bpb = bits_per_byte([(rolling, len(text))])  # what lm-eval reports for this document
    assert result.bpb == pytest.approx(harness_bpb - eos / math.log(2) / len(text), rel=1e-5)


def test_generate_until_is_greedy_generation_cut_before_the_stop(lm) -> None:
    model = lm.model
    prompt, n = "In the beginning", 30
    full = aunet.generate(model, [prompt.encode()], n, temperature=0)[0]
    reached = [chr(b) for b in full[3:] if 32 <= b < 127 and b != ord(".")]
    if not reached:
        pytest.skip("the greedy text of this 3-step model has no ASCII byte to stop at")
    stop = reached[0]  # a stop string the greedy text reaches
    asked = [
        (prompt, {"until": ["."], "max_gen_toks": n}),
        (prompt, {"until": stop, "max_gen_toks": n}),
        (prompt, {"until": ["."], "max_gen_toks": n, "do_sample": False, "temperature": 0.0}),
    ]
    got = lm.generate_until([request("generate_until", c, g) for c, g in asked])
    cut = full.split(b".")[0].decode("utf-8", errors="replace")
    assert "." not in got[0] and got[0] == cut and got[2] == cut
    assert got[1] == full[: full.index(stop.encode())].decode("utf-8", errors="replace") and stop not in got[1]


# -- the command line and user errors --------------------------------------------------------------


def harness_parser() -> argparse.ArgumentParser:
    """The command line's parser, where ``aunet harness`` is declared."""
    from aunet.cli.main import build_parser

    return build_parser()


def test_the_command_writes_lm_eval_s_json_and_prints_a_table(run_dir: Path, tmp_path: Path, capsys) -> None:
    tasks, _ = write_task(tmp_path / "tasks")
    out = tmp_path / "out"
    args = harness_parser().parse_args(
        [
            "harness",
            "--ckpt",
            str(run_dir),
            "--tasks",
            "aunet_local_mc",
            "--include-path",
            str(tasks),
            "--limit",
            "4",
            "--batch-size",
            "3",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    (written,) = out.glob("*/results_*.json")
    figures = json.loads(written.read_text())["results"]["aunet_local_mc"]
    assert figures["sample_len"] == 4
    assert f"results: {written}" in printed
    row = ["aunet_local_mc", "acc", f"{figures['acc,none']:.4f}", f"{figures['acc_stderr,none']:.4f}"]
    assert row in [line.split() for line in printed.splitlines()]


def test_unknown_tasks_and_bad_flags_are_user_errors(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import lm_eval.tasks

    tasks, _ = write_task(tmp_path / "tasks")

    # Indexing lm-eval's ~15,000 built-in tasks takes 10 s here: the check runs on the local index.
    class LocalOnly(lm_eval.tasks.TaskManager):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "include_defaults": False})

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalOnly)
    with pytest.raises(
        InputError,
        match=r"unknown lm-eval task: aunet_local_mx; did you mean 'aunet_local_mc'\?.*"
        r"--include-path",
    ):
        harness.run_harness(run_dir, ["aunet_local_mx"], out=tmp_path / "out", include_path=tasks)
    with pytest.raises(InputError, match="--include-path: .* does not exist"):
        harness.run_harness(run_dir, ["aunet_local_mc"], out=tmp_path / "out", include_path=tmp_path / "none")
    with pytest.raises(SystemExit):
        harness_parser().parse_args(["harness", "--ckpt", "x", "--tasks", "a,,b", "--out", "o"])


def test_a_bpe_model_alone_is_refused_with_where_its_encoding_is(lm) -> None:
    spec = aunet.parse_spec(
        'name = "bpe"\n[model]\ncontext = 32\ntokenizer = { kind = "bpe", vocab_size = 300, bytes_per_token = 2.0 }\n'
        '[[levels]]\ndim = 32\nstage = { kind = "transformer", layers = 1, head_dim = 16 }\n'
    )
    with pytest.raises(InputError, match=r"BPE baseline, which reads through the tokenizer its run trained"):
        harness.make_lm(model=aunet.build_model(spec))


def test_without_lm_eval_a_clear_error_and_aunet_never_imports_it(monkeypatch) -> None:
    code = "import sys, aunet, aunet.integrations.lm_eval.adapter, aunet.cli.main; assert 'lm_eval' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if not installed
    with pytest.raises(InputError, match=r"lm-evaluation-harness is not installed: pip install 'aunet\[eval\]'"):
        harness.run_harness("any", ["t"], out=Path("o"))


def test_the_example_task_is_reproducible_and_runs_from_any_directory(
    run_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """``examples/harness``: the checked-in data is what its script writes, and the task runs from
    a directory other than the checkout (its data path is relative to its YAML file); results go
    to a folder named after the run, however ``--ckpt`` is spelt."""
    import importlib.util
    import os

    root = Path(__file__).resolve().parents[1]
    script = root / "examples" / "harness" / "make_bible_cloze.py"
    spec = importlib.util.spec_from_file_location("make_bible_cloze", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path / "bible_cloze.jsonl")
    assert (tmp_path / "bible_cloze.jsonl").read_bytes() == (script.parent / "bible_cloze.jsonl").read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ckpt = os.path.relpath(run_dir, elsewhere)  # ../../.../run
    with pytest.warns(RuntimeWarning, match="longer than the model's context"):  # context 128: cuts counted
        done = harness.evaluate_tasks(ckpt, ["bible_cloze"], out=Path("out"), include_path=script.parent, limit=4)
    assert 0.0 <= done.results["results"]["bible_cloze"]["acc,none"] <= 1.0
    assert done.results["n-samples"]["bible_cloze"]["effective"] == 4
    assert done.results_file.parent == Path("out") / run_dir.name  # not "..__..__run"


def test_malformed_tasks_are_one_line_each(run_dir: Path, tmp_path: Path) -> None:
    tasks, _ = write_task(tmp_path / "tasks")
    good = (tasks / "aunet_local_mc.yaml").read_text()
    cases = {
        "undefined": (good.replace("{{question}}", "{{nofield}}"), "UndefinedError: 'nofield' is undefined"),
        "output": (good.replace("multiple_choice", "banana"), "invalid output_type 'banana'"),
        "yaml": (good + "metric_list: [unclosed\n", "not a readable lm-eval task"),
    }
    for name, (text, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "t.yaml").write_text(text.replace("task: aunet_local_mc", f"task: bad_{name}"))
        result = run_cli(
            "harness",
            "--ckpt",
            str(run_dir),
            "--tasks",
            f"bad_{name}",
            "--include-path",
            str(folder),
            "--limit",
            "2",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        )
        errors = [line for line in result.stderr.splitlines() if line.startswith("aunet: error:")]
        assert result.returncode == 2 and "Traceback" not in result.stderr and len(errors) == 1, result.stderr[-2000:]
        assert message in errors[0], errors


def test_generation_arguments_are_checked_and_capped(lm) -> None:
    with pytest.raises(InputError, match=r"generation_kwargs.until of the task must be a string or a list"):
        lm.generate_until([request("generate_until", "In the", {"until": 5})])
    with pytest.raises(InputError, match=r"generation_kwargs.max_gen_toks .* at least 1, got -3"):
        lm.generate_until([request("generate_until", "In the", {"until": ["."], "max_gen_toks": -3})])
    assert _checked_gen_kwargs({"max_gen_toks": "1e9"})["max_gen_toks"] == 10**9  # YAML reads 1e9 as text
    with pytest.warns(RuntimeWarning, match="asks for 1,000,000,000 new bytes per request; aunet generates at most"):
        (text,) = lm.generate_until(
            [request("generate_until", "In the", {"until": ["\n", "."], "max_gen_toks": 1e9, "do_sample": False})]
        )
    assert len(text.encode()) <= harness.MAX_GEN_BYTES
