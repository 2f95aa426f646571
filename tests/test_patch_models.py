"""MEGABYTE-, SpaceByte- and H-Net-style hierarchies as shipped specs (``specs/megabyte-tiny.toml``,
``specs/spacebyte-tiny.toml``, ``specs/hnet-tiny.toml``): within 10% of aunet2-tiny's training FLOPs per byte, and each
trained, evaluated, generated from (greedy cached generation equal to the full forward),
exported for Hugging Face and profiled, at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import aunet
from aunet.core.accounting import account
from aunet.core.resources import read_corpus, spec_path
from aunet.jobs.config import load_spec
from aunet.testing.models import assert_matches_teacher_forcing

from conftest import profile_tiny, run_cli

NAMES = ("megabyte-tiny", "spacebyte-tiny", "hnet-tiny")
TINY = ["--set", "model.context=128", "--set", "levels[0].stage.window=64", "--set", "train.eval.final_bytes=2000"]


@pytest.mark.parametrize("name", NAMES)
def test_within_ten_percent_of_aunet2_tinys_flops_per_byte(name: str) -> None:
    reference = account(aunet.resolve_spec(load_spec("aunet2-tiny"))).flops_per_byte
    mine = account(aunet.resolve_spec(load_spec(name))).flops_per_byte
    assert abs(mine / reference - 1) < 0.10, (name, mine, reference)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_trains_evaluates_generates_exports_and_profiles(name: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = run_cli(
        "train",
        "--spec",
        name,
        "--steps",
        "20",
        "--out",
        str(run),
        "--device",
        "cpu",
        *TINY,
        "--set",
        "train.sample.bytes=16",
    )
    assert trained.returncode == 0, trained.stderr
    # A few kilobytes: the run's own validation split (what `aunet eval` reads by default, tested
    # in test_train.py) takes seconds per spec at this size and tells nothing more here.
    text = tmp_path / "text.txt"
    text.write_bytes(read_corpus("en_web")[:4000])
    evaluated = run_cli("eval", "--ckpt", str(run), "--data", str(text), "--json", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert 0 < json.loads(evaluated.stdout)["bpb"] < 9

    loaded = aunet.load_run(run)
    assert_matches_teacher_forcing(loaded.model, [b"In the beginning God", b"", b"And the earth"], 24)
    generated = run_cli("generate", "--ckpt", str(run), "--prompt", "In the", "--max-bytes", "12", "--device", "cpu")
    assert generated.returncode == 0, generated.stderr

    pytest.importorskip("transformers", reason="the Hugging Face export needs transformers (aunet[hf])")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = run_cli("export", "--ckpt", str(run), "--out", str(tmp_path / "hf"))
    assert exported.returncode == 0, exported.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    batch = tokenizer(["In the beginning"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text == aunet.generate(loaded.model, [b"In the beginning"], 12)[0].decode("utf-8", "replace")

    profile_tiny(str(spec_path(name)), tmp_path / "prof")
