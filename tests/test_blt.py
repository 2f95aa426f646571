"""A BLT-style hierarchy as a shipped spec (``specs/blt-tiny.toml``: aunet2-tiny with BLT's entropy
patches at level 1, read from a small byte model aunet trains, ``specs/entropy-tiny.toml``): within
10% of aunet2-tiny's training FLOPs per byte with the entropy model's forward counted, and, at a
tiny size, its entropy model trained first, then trained, evaluated, generated from (greedy cached
generation equal to the full forward), exported for Hugging Face and profiled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aunet
from aunet.core.accounting import account
from aunet.core.overrides import apply_overrides
from aunet.core.resources import read_corpus, spec_path
from aunet.jobs.config import load_spec
from aunet.splitters.entropy import Entropy
from aunet.testing.models import assert_matches_teacher_forcing

from conftest import profile_tiny, run_cli

#: blt-tiny's patches on the embedded corpus with entropy-tiny trained by its spec (2,000 steps,
#: 2026-12-06; the spec's comment): what its FLOPs per byte are measured at.
BLT_CONTRACTION = 4.954
TINY = ["--set", "model.context=128", "--set", "levels[0].stage.window=64", "--set", "train.eval.final_bytes=2000"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 KB of the embedded corpus: training on it reads its every byte through the entropy model."""
    path = tmp_path_factory.mktemp("data") / "genesis.txt"
    path.write_bytes(read_corpus("en_web")[: 48 << 10])
    return path


@pytest.fixture(scope="module")
def entropy_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """entropy-tiny at its own size, trained a few steps by ``aunet train``."""
    out = tmp_path_factory.mktemp("entropy") / "run"
    trained = run_cli(
        "train",
        "--spec",
        "entropy-tiny",
        "--steps",
        "4",
        "--out",
        str(out),
        "--data",
        str(corpus),
        "--device",
        "cpu",
        "--set",
        "train.eval.final_bytes=2000",
        "--set",
        "train.sample.bytes=0",
    )
    assert trained.returncode == 0, trained.stderr
    return out


def test_within_ten_percent_of_aunet2_tinys_flops_per_byte_with_its_entropy_model(entropy_run: Path) -> None:
    reference = account(aunet.resolve_spec(load_spec("aunet2-tiny"))).flops_per_byte
    spec = apply_overrides(
        load_spec("blt-tiny"),
        [f"levels[1].splitter.model={entropy_run}", f"levels[1].contraction={BLT_CONTRACTION}"],
    )
    mine = account(aunet.resolve_spec(spec))
    assert mine.splitter_flops_per_byte == pytest.approx(361_344)  # entropy-tiny's forward, per byte
    assert abs(mine.flops_per_byte / reference - 1) < 0.10, (mine.flops_per_byte, reference)


def test_without_its_entropy_model_it_says_how_to_train_one(tmp_path: Path) -> None:
    checked = run_cli("spec", "check", "blt-tiny", cwd=tmp_path, process=True)
    assert checked.returncode == 2
    assert checked.stderr.strip().splitlines() == [
        "aunet: error: blt-tiny: levels[1].splitter.model: 'runs/entropy-tiny' does not exist; train one first: "
        "`aunet train --spec entropy-tiny --out runs/entropy-tiny`"
    ]


@pytest.mark.slow
def test_trains_evaluates_generates_exports_and_profiles(entropy_run: Path, corpus: Path, tmp_path: Path) -> None:
    # A threshold between the barely trained entropy model's entropies, so that some characters
    # end patches and others do not.
    model = Entropy(model=str(entropy_run)).loaded()
    values = np.unique(model.entropies(np.frombuffer(b"In the beginning God created the heavens", np.uint8)))
    threshold = float(values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    splitter = [
        "--set",
        f"levels[1].splitter.model={entropy_run}",
        "--set",
        f"levels[1].splitter.threshold={threshold}",
    ]
    run = tmp_path / "run"
    trained = run_cli(
        "train",
        "--spec",
        "blt-tiny",
        "--steps",
        "20",
        "--out",
        str(run),
        "--data",
        str(corpus),
        "--device",
        "cpu",
        *TINY,
        *splitter,
        "--set",
        "train.sample.bytes=16",
    )
    assert trained.returncode == 0, trained.stderr
    resolved = (run / "spec.toml").read_text()
    pinned = entropy_run / "checkpoints" / "step-00000004"
    assert f'model = "{pinned.absolute()}"' in resolved and "sha256 = " in resolved
    evaluated = run_cli("eval", "--ckpt", str(run), "--json", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert 0 < json.loads(evaluated.stdout)["bpb"] < 9

    loaded = aunet.load_run(run)
    prompts = [b"In the beginning God", b"", b"And the earth"]
    levels = [loaded.encoding.encode(p).levels for p in prompts]
    assert any(0 < int(lv[1:].sum()) < len(p) for lv, p in zip(levels, prompts))  # some patches end, not all
    assert_matches_teacher_forcing(loaded.model, prompts, 24)
    generated = run_cli("generate", "--ckpt", str(run), "--prompt", "In the", "--max-bytes", "12", "--device", "cpu")
    assert generated.returncode == 0, generated.stderr

    pytest.importorskip("transformers", reason="the Hugging Face export needs transformers (aunet[hf])")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_hf import LOAD_AND_GENERATE, without_aunet

    exported = run_cli("export", "--ckpt", str(run), "--out", str(tmp_path / "hf"))
    assert exported.returncode == 0, exported.stderr
    shipped = tmp_path / "hf" / "splitters" / "level-1"
    assert sorted(p.name for p in shipped.iterdir()) == ["meta.json", "model.safetensors"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert 'model = "splitters/level-1"' in config["spec"]
    moved = tmp_path / "moved"
    (tmp_path / "hf").rename(moved)  # the export reads its entropy model from its own folder, wherever it is
    model = AutoModelForCausalLM.from_pretrained(moved, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(moved, trust_remote_code=True)
    batch = tokenizer(["In the beginning"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text == aunet.generate(loaded.model, [b"In the beginning"], 12)[0].decode("utf-8", "replace")
    # And on a machine with transformers alone (the export's runtime zip serves aunet), which also
    # saves it again, the entropy model with it.
    alone = subprocess.run(
        [sys.executable, "-S", "-c", LOAD_AND_GENERATE, str(moved), "In the beginning", str(tmp_path / "saved")],
        capture_output=True,
        text=True,
        env=without_aunet(tmp_path),
        cwd=tmp_path,
        timeout=300,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    seen = json.loads(alone.stdout.strip().splitlines()[-1])
    assert seen["installed"] == [] and "aunet-runtime.zip" in seen["bridge"] and "splitters" in seen["saved"]
    assert seen["text"] == aunet.generate(loaded.model, [b"In the beginning"], 24)[0].decode("utf-8", "replace")

    profile_tiny(
        str(spec_path("blt-tiny")),
        tmp_path / "prof",
        "--data",
        str(corpus),
        *splitter,
        "--set",
        "levels[1].contraction=4.0",
    )
