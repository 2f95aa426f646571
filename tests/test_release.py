"""What a previous release wrote still works: a run and a Hugging Face export written by aunet
0.1.0 before the job layer's redesign (``tests/data/release-0.1.0``) evaluate, generate, resume
and export with the same figures to the last bit, and a fixed spec and seed give the same logits.

The fixture: a 2-level model of widths 16 and 24 (context 32) trained 6 steps on the embedded
corpus, checkpoint at step 6 (``run/``); ``hf/`` is ``aunet export`` of it, as that release wrote
it (its remote code and runtime zip included); ``expected.json`` holds what that release computed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import aunet
from aunet.core.model import ShapeMode

from conftest import run_cli

FIXTURE = Path(__file__).with_name("data") / "release-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def _logits(model, data: bytes) -> torch.Tensor:
    tokens, levels = aunet.encode(data)[None], aunet.compute_levels(model.spec, data)[None]
    with torch.no_grad():
        return model(tokens, levels, shapes=ShapeMode.EAGER, doc_mask=False).logits


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


@pytest.fixture(autouse=True)
def one_thread():
    """The figures were computed on one thread: float sums in another order differ in their
    last bits (``expected.json``'s ``threads``)."""
    from aunet.jobs.runtime.devices import threads

    with threads(EXPECTED["threads"]):
        yield


@pytest.fixture
def run(tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(FIXTURE / "run", copy)
    return copy


def test_the_old_run_evaluates_and_generates_as_it_did(run: Path) -> None:
    evaluated = run_cli("eval", "--ckpt", str(run), "--json", "--batch-size", "256")
    assert evaluated.returncode == 0, evaluated.stderr
    figures = json.loads(evaluated.stdout)
    assert (figures["bpb"], figures["bytes"]) == (EXPECTED["eval_bpb_batch_256"], EXPECTED["eval_bytes"])
    loaded = aunet.load_run(run)
    assert aunet.generate(loaded.model, [b"In the beginning"], 40)[0].hex() == EXPECTED["greedy_hex"]
    assert _sha(_logits(loaded.model, EXPECTED["probe"].encode())) == EXPECTED["checkpoint_logits_sha256"]


def test_the_old_run_resumes_to_the_same_losses(run: Path) -> None:
    resumed = run_cli("train", "--out", str(run), "--resume", "--steps", "9")
    assert resumed.returncode == 0, resumed.stderr
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses == EXPECTED["losses"]


def test_a_fixed_spec_and_seed_give_the_same_logits() -> None:
    torch.manual_seed(0)
    model = aunet.build_model(aunet.load_spec("aunet2-tiny")).eval()
    assert _sha(_logits(model, EXPECTED["probe"].encode())) == EXPECTED["aunet2_tiny_seed0_logits_sha256"]


def test_the_old_export_loads_and_a_new_one_matches_it(run: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="the Hugging Face export needs transformers (aunet[hf])")
    probe = torch.tensor([aunet.encode(EXPECTED["probe"].encode()).tolist()])
    old = transformers.AutoModelForCausalLM.from_pretrained(FIXTURE / "hf", trust_remote_code=True)
    with torch.no_grad():
        assert _sha(old(probe).logits) == EXPECTED["checkpoint_logits_sha256"]
    exported = run_cli("export", "--ckpt", str(run), "--out", str(tmp_path / "hf"))
    assert exported.returncode == 0, exported.stderr
    new = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True)
    with torch.no_grad():
        assert _sha(new(probe).logits) == EXPECTED["checkpoint_logits_sha256"]
