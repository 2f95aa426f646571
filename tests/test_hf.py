"""Hugging Face: ``aunet export``, the remote code on a machine with ``transformers`` alone,
logits and greedy generation equal to aunet's own, the KV caches used, the round trip."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the Hugging Face export needs transformers (aunet[hf])")

import aunet
from aunet.core.model import ShapeMode
from tests.conftest import run_cli, train_small_run

PROMPTS = ["In the beginning God", "And the earth was", "Jesus wept."]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, exported folder) of a run trained for a few steps."""
    tmp = tmp_path_factory.mktemp("hf")
    train_small_run(tmp, context=96, steps=3, overrides=("train.lr=1e-2",))
    result = run_cli("export", "--ckpt", str(tmp / "run"), "--out", str(tmp / "hf"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout.startswith("exported to")  # no progress bar of transformers'
    return tmp / "run", tmp / "hf"


@pytest.fixture(scope="module")
def hf_model(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(exported[1], trust_remote_code=True)
    return model, AutoTokenizer.from_pretrained(exported[1], trust_remote_code=True)


def _aunet_logits(model, text: str) -> torch.Tensor:
    data = text.encode()
    tokens, levels = aunet.encode(data)[None], aunet.compute_levels(model.spec, data)[None]
    with torch.no_grad():
        return model(tokens, levels, shapes=ShapeMode.EAGER, doc_mask=False).logits[0]  # (T, V)


def test_the_runtime_holds_no_command_line_trainer_or_harness(exported) -> None:
    names = zipfile.ZipFile(exported[1] / "aunet-runtime.zip").namelist()
    ours = [n for n in names if n.startswith("aunet/")]
    assert "aunet/core/model.py" in ours and "aunet/integrations/hf/bridge.py" in ours
    assert not [n for n in ours if n.startswith(("aunet/jobs/", "aunet/cli/", "aunet/integrations/lm_eval/"))]
    assert "aunet/integrations/hf/exporter.py" not in ours  # exporting needs runs: not the runtime's job
    entry_points = next(
        zipfile.ZipFile(exported[1] / "aunet-runtime.zip").read(n).decode()
        for n in names
        if n.startswith("aunet-") and n.endswith("entry_points.txt")
    )
    assert "builtin-splitters" in entry_points and "[console_scripts]" not in entry_points


def test_export_writes_a_complete_folder(exported) -> None:
    folder = exported[1]
    mask = os.umask(0)
    os.umask(mask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask  # as mkdir makes it (mkdtemp's was the owner's)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "configuration_aunet.py",
        "modeling_aunet.py",
        "tokenization_aunet.py",
        "aunet-runtime.zip",
    } <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_aunet.AUNetConfig",
        "AutoModelForCausalLM": "modeling_aunet.AUNetForCausalLM",
    }
    assert config["model_type"] == "aunet" and config["max_position_embeddings"] == 96 and config["step"] == 3
    assert aunet.parse_spec(config["spec"]) == aunet.load_run(exported[0]).spec  # the whole resolved spec
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["suppress_tokens"] == [256, 258] and generation["eos_token_id"] == 257
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer["auto_map"]["AutoTokenizer"][0] == "tokenization_aunet.AUNetTokenizer"
    assert not any(p.suffix in (".pt", ".bin", ".pkl") for p in folder.iterdir())  # safetensors only


def test_logits_equal_aunets_with_padding_on_either_side(hf_model, exported) -> None:
    model, tokenizer = hf_model
    ours = aunet.load_run(exported[0]).model
    for side in ("left", "right"):
        tokenizer.padding_side = side
        batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
        for use_cache in (False, True):  # the scoring forward and generate's prefill
            with torch.no_grad():
                logits = model(**batch, use_cache=use_cache).logits
            for r, text in enumerate(PROMPTS):
                real = batch["attention_mask"][r].bool()
                expected = _aunet_logits(ours, text)
                assert int(real.sum()) == len(text.encode()) + 1  # BOS first, as aunet trains
                torch.testing.assert_close(logits[r][real], expected, atol=1e-5, rtol=0)
                assert not logits[r][~real].any()  # padding gets no logits
    tokenizer.padding_side = "left"


def test_a_row_of_several_documents_is_scored_within_each(hf_model, exported) -> None:
    model, _ = hf_model
    ours = aunet.load_run(exported[0]).model
    a, b = b"In the beginning", b"And God said"
    tokens = torch.cat([aunet.encode(a), aunet.encode(b)])[None]  # BOS a BOS b
    levels = torch.cat([aunet.compute_levels(ours.spec, a), aunet.compute_levels(ours.spec, b)])[None]
    with torch.no_grad():
        expected = ours(tokens, levels, shapes=ShapeMode.EAGER, doc_mask=True).logits
        torch.testing.assert_close(model(tokens).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            model(tokens).logits[0, len(a) + 1 :], _aunet_logits(ours, b.decode()), atol=1e-5, rtol=0
        )  # the second document does not see the first


def test_greedy_generate_equals_aunet_generate_and_uses_the_caches(hf_model, exported, monkeypatch) -> None:
    from aunet.core import decoding

    model, tokenizer = hf_model
    prefills, steps = [], []
    monkeypatch.setattr(decoding, "prefill", _spy(decoding.prefill, prefills))
    monkeypatch.setattr(decoding, "step", _spy(decoding.step, steps))
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=24, do_sample=False)
    assert len(prefills) == 1 and 20 <= len(steps) <= 23  # one prefill, then one cached step per new byte
    texts = [tokenizer.decode(row[batch["input_ids"].shape[1] :], skip_special_tokens=True) for row in out]
    ours = aunet.load_run(exported[0]).model
    assert texts == [b.decode("utf-8", "replace") for b in aunet.generate(ours, [p.encode() for p in PROMPTS], 24)]
    cli = run_cli(
        "generate", "--ckpt", str(exported[0]), "--prompt", PROMPTS[0], "--max-bytes", "24", "--temperature", "0"
    )
    assert cli.returncode == 0 and cli.stdout == PROMPTS[0] + texts[0] + "\n"


def _spy(function, calls: list):
    def spied(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return spied


def test_save_and_load_round_trip_and_auto_classes_without_remote_code(hf_model, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import aunet.integrations.hf  # registers "aunet" with the Auto classes

    model, tokenizer = hf_model
    model.save_pretrained(tmp_path / "again")
    tokenizer.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "modeling_aunet.py").is_file()  # the remote code travels on
    assert (tmp_path / "again" / "aunet-runtime.zip").is_file()  # and so does the runtime (push_to_hub too)
    local = AutoModelForCausalLM.from_pretrained(tmp_path / "again")  # no trust_remote_code: the installed aunet
    assert type(local) is aunet.integrations.hf.AUNetForCausalLM
    batch = AutoTokenizer.from_pretrained(tmp_path / "again")(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(local(**batch).logits, model(**batch).logits, atol=0, rtol=0)
        loss = local(**batch, labels=batch["input_ids"]).loss
    assert 0 < float(loss) < 8


def test_tokenizer_numbers_tokens_as_aunet_does(hf_model) -> None:
    _, tokenizer = hf_model
    text = "héllo <eos> 日本"
    ids = tokenizer(text)["input_ids"]
    assert ids == aunet.encode(text.encode()).tolist()  # BOS + the UTF-8 bytes; "<eos>" in text stays bytes
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode([104, 195]) == "h\ufffd"  # a character cut in two is replaced, not dropped
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (256, 257, 258)


def test_bad_inputs_are_clear_errors(hf_model, exported, tmp_path) -> None:
    model, tokenizer = hf_model
    with pytest.raises(ValueError, match="at most 96"):
        model(torch.full((1, 97), 65))
    with pytest.raises(ValueError, match="padding between real tokens"):
        model(torch.tensor([[256, 65, 66]]), attention_mask=torch.tensor([[1, 0, 1]]))
    with pytest.raises(ValueError, match="token id 300"):
        model(torch.tensor([[256, 300]]))
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(**tokenizer(["a"], return_tensors="pt"), num_beams=2, max_new_tokens=2)
    again = run_cli("export", "--ckpt", str(exported[0]), "--out", str(exported[1]))
    assert again.returncode == 2 and "not an empty folder" in again.stderr and "Traceback" not in again.stderr


# -- a machine with transformers alone ---------------------------------------------------------------

LOAD_AND_GENERATE = """
import json, sys
import importlib.util
from transformers import AutoModelForCausalLM, AutoTokenizer
hidden = [n for n in ("aunet", "attrs", "attr", "cattrs", "pluggy") if importlib.util.find_spec(n) is not None]
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
batch = tokenizer([sys.argv[2]], return_tensors="pt")
out = model.generate(**batch, max_new_tokens=24, do_sample=False)
model.save_pretrained(sys.argv[3])  # from the zip runtime: the zip is copied on
import os
try:  # the zip holds a module of another name (planted): it must not be importable
    import zstandard_planted_probe
    planted = "imported"
except ModuleNotFoundError:
    planted = "not found"
print(json.dumps({"installed": hidden, "bridge": model.bridge.__file__, "planted": planted,
                  "zip_on_path": any("aunet-runtime.zip" in p for p in sys.path),
                  "saved": sorted(os.listdir(sys.argv[3])),
                  "text": tokenizer.decode(out[0][batch["input_ids"].shape[1]:], skip_special_tokens=True)}))
"""


def without_aunet(tmp_path: Path) -> dict[str, str]:
    """The environment of a process (run with ``python -S``) whose site-packages lacks aunet,
    attrs, cattrs and pluggy: links to every other installed package, in ``tmp_path``."""
    site = Path(sysconfig.get_paths()["purelib"])
    alone = tmp_path / "site-packages"
    alone.mkdir()
    hidden = re.compile(r"^(__editable__.*|aunet.*|attrs?([-_.].*)?|cattrs?([-_.].*)?|pluggy([-_.].*)?|.*\.pth)$")
    for entry in site.iterdir():
        if not hidden.match(entry.name):
            (alone / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(alone), HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    return env


@pytest.mark.slow
def test_a_fresh_process_with_transformers_alone_loads_and_generates(exported, tmp_path) -> None:
    """The same interpreter with a site-packages that lacks aunet, attrs, cattrs and pluggy (links
    to every other installed package, ``python -S``): the export's runtime zip provides them."""
    env = without_aunet(tmp_path)
    # A copy of the export whose runtime zip also holds a module of another name, as a tampered
    # download could: loading the model must not make it importable.
    folder = tmp_path / "export"
    shutil.copytree(exported[1], folder)
    marker = tmp_path / "planted-ran"
    with zipfile.ZipFile(folder / "aunet-runtime.zip", "a") as archive:
        archive.writestr("zstandard_planted_probe.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    result = subprocess.run(
        [sys.executable, "-S", "-c", LOAD_AND_GENERATE, str(folder), PROMPTS[0], str(tmp_path / "saved")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["installed"] == []  # nothing of aunet's was importable before loading
    assert "aunet-runtime.zip" in seen["bridge"]
    assert seen["planted"] == "not found" and not seen["zip_on_path"] and not marker.exists()
    assert "aunet-runtime.zip" in seen["saved"] and "modeling_aunet.py" in seen["saved"]
    assert (tmp_path / "saved" / "aunet-runtime.zip").read_bytes() == (folder / "aunet-runtime.zip").read_bytes()
    cli = run_cli(
        "generate", "--ckpt", str(exported[0]), "--prompt", PROMPTS[0], "--max-bytes", "24", "--temperature", "0"
    )
    assert cli.stdout == PROMPTS[0] + seen["text"] + "\n"


def test_an_installed_aunet_of_another_version_runs_it_with_a_warning(hf_model) -> None:
    from aunet.integrations.hf import AUNetConfig, AUNetForCausalLM

    model, _ = hf_model
    config = AUNetConfig(**{**model.config.to_dict(), "aunet_version": "0.0.1"})
    with pytest.warns(UserWarning, match="exported by aunet 0.0.1; the installed aunet .* runs it"):
        AUNetForCausalLM(config)
