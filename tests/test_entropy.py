"""BLT's entropy patches as a splitter (``entropy``, ``aunet.splitters.entropy``): its values under a
model whose entropies are known, batch equal to streaming, the splitter kit, the model read from
a verified checkpoint (never unpickled) and pinned in a run's resolved spec, every bad path one
line, and the FLOPs of its forward in a spec's accounting."""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from aunet.core import checkpoints
from aunet.core.accounting import account, forward_flops_per_byte
from aunet.core.convert import dump_spec, parse_spec
from aunet.core.errors import SpecError
from aunet.core.levels import SplitterStack
from aunet.core.model import build_model
from aunet.core.spec import is_resolved, pin_splitters, resolve_spec
from aunet.core.tokens import BOS
from aunet.splitters.entropy import Entropy, EntropyRule
from aunet.splitters.entropy_model import DTYPE, bits, load
from aunet.splitters.words import Whitespace, WordPair
from aunet.testing.splitters import assert_levels_consistent, check_splitter

from conftest import run_cli

FLAT = """
name = "entropy-test"
[model]
context = {context}
[[levels]]
dim = 32
stage = {{ kind = "transformer", layers = 1, head_dim = 16 }}
"""
#: Bytes after which the known model is unsure (uniform over its 259 ids); after any other it is sure.
UNSURE = b" .\xc3"
HIGH = math.log2(259)  # the entropy of a uniform distribution over 259 ids, in bits


def save_checkpoint(model: torch.nn.Module, spec_text: str, folder: Path, *, step: int = 0) -> Path:
    """``model`` as a run directory of one checkpoint (the format ``aunet train`` writes)."""
    from safetensors.torch import save_file

    ckpt = folder / checkpoints.CHECKPOINTS / f"step-{step:08d}"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / checkpoints.MODEL_FILE))
    weights = ckpt / checkpoints.MODEL_FILE
    files = {checkpoints.MODEL_FILE: {"bytes": weights.stat().st_size, "sha256": checkpoints.sha256(weights)}}
    (ckpt / checkpoints.META).write_text(json.dumps({"step": step, "spec": spec_text, "files": files}))
    (folder / checkpoints.CHECKPOINTS / checkpoints.LATEST).write_text(ckpt.name)
    return ckpt


def known_model(folder: Path) -> Path:
    """A flat model that ignores its context: after a byte of ``UNSURE`` (and after BOS) its
    next-token distribution is uniform (entropy log2 259), after any other byte it is sure of
    the next byte (entropy about 0). Its blocks add nothing to the embedding."""
    text = FLAT.format(context=16)
    model = build_model(parse_spec(text))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.norm.weight.fill_(1.0)
        for block in model.trunk.blocks:
            for name, p in block.named_parameters():
                if "norm" in name:
                    p.fill_(1.0)
        model.embed.weight[:, 0] = 1.0  # sure: the normalized embedding is sqrt(32) along dim 0
        for byte in UNSURE:
            model.embed.weight[byte] = 0.0  # unsure: a zero vector, all logits 0
        model.embed.weight[BOS] = 0.0
        model.head.weight[ord("x"), 0] = 20.0  # sure of an "x"
    save_checkpoint(model, text, folder)
    return folder


def random_model(folder: Path, *, context: int = 24, seed: int = 0) -> Path:
    """A flat model as initialized: entropies that depend on the whole window."""
    text = FLAT.format(context=context)
    torch.manual_seed(seed)
    save_checkpoint(build_model(parse_spec(text)), text, folder)
    return folder


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return known_model(tmp_path_factory.mktemp("known"))


@pytest.fixture(scope="module")
def windowed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_model(tmp_path_factory.mktemp("random"))


def between_entropies(model, data: bytes) -> float:
    """A threshold halfway between the two middle entropies of ``data`` (far from every one, where
    the two forms' rounding cannot decide a mark)."""
    values = np.unique(model.entropies(np.frombuffer(data, dtype=np.uint8)))
    middle = len(values) // 2
    return float(values[middle - 1] + values[middle]) / 2


def levels(splitters, data: bytes) -> list[int]:
    return SplitterStack(tuple(splitters)).levels(data).tolist()


def test_the_known_model_has_the_entropies_it_was_built_for(known: Path) -> None:
    model = Entropy(model=str(known)).loaded()
    entropy = model.entropies(np.frombuffer(b"a b", dtype=np.uint8))
    assert entropy[0] == pytest.approx(HIGH)  # after BOS alone
    assert entropy[1] < 1e-6 and entropy[2] == pytest.approx(HIGH) and entropy[3] < 1e-6


def test_global_rule_marks_the_character_after_which_the_entropy_is_high(known: Path) -> None:
    entropy = Entropy(model=str(known), threshold=4.0)
    assert levels([entropy], b"ab cd. e") == [0, 0, 1, 0, 0, 1, 1, 0]
    assert levels([entropy], b"  a") == [1, 1, 0]
    # The lead byte of "é" (0xC3) is followed by high entropy, but it ends no character: the mark
    # goes on a character's last byte only, and "é" ends where the model is sure.
    assert levels([entropy], "aé b".encode()) == [0, 0, 0, 1, 0]
    # A threshold above every entropy marks nothing; below every one, every character.
    assert levels([Entropy(model=str(known), threshold=8.5)], b"a b. c") == [0] * 6
    assert levels([Entropy(model=str(known), threshold=-1.0)], "aé".encode()) == [1, 0, 1]


def test_monotonic_rule_marks_where_the_entropy_rises_past_the_threshold(known: Path) -> None:
    rising = Entropy(model=str(known), rule=EntropyRule.MONOTONIC, threshold=4.0)
    # Only the first of two unsure bytes in a row: the second's entropy does not rise. Nor the
    # first byte: the entropy after BOS alone was already high.
    assert levels([rising], b"ab  c. d") == [0, 0, 1, 0, 0, 1, 0, 0]
    assert levels([rising], b" a") == [0, 0]
    falling = Entropy(model=str(known), rule=EntropyRule.MONOTONIC, threshold=-4.0)
    assert levels([falling], b"a  b") == [0, 1, 1, 0]  # a drop of 8 bits is not above -4; none or a rise is


def test_the_batch_form_equals_the_streaming_form_across_windows(windowed: Path) -> None:
    data = ("In the beginning God créated the heavens 中文 and the earth. " * 4).encode() + b"\xff\xe4\xb8!"
    model = Entropy(model=str(windowed)).loaded()
    assert model.window == 23  # windows of 23 bytes after a BOS each: the text spans 12 of them
    batch = model.entropies(np.frombuffer(data, dtype=np.uint8))
    reader = model.reader()
    pushed = np.array([reader.push(b) for b in data])
    reader = model.reader()
    fed = np.concatenate([reader.feed(data[i : i + 10]) for i in range(0, len(data), 10)])
    np.testing.assert_allclose(pushed, batch[1:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(fed, batch[1:], rtol=0, atol=1e-12)
    # A window's entropies read that window only: the same bytes give the same entropies there.
    assert batch[1 + 23 : 1 + 46].tolist() == pytest.approx(model.entropies(np.frombuffer(data[23:46], np.uint8))[1:])
    for rule, threshold in ((EntropyRule.GLOBAL, between_entropies(model, data)), (EntropyRule.MONOTONIC, 0.0)):
        splitter = Entropy(model=str(windowed), rule=rule, threshold=threshold)
        assert 0 < sum(levels([splitter], data)) < len(data)
        for stack in ((splitter,), (splitter, WordPair()), (Whitespace(), splitter)):
            assert_levels_consistent(SplitterStack(stack), data, chunk_sizes=(1, 7, 23, 24, 100, 1000))


@pytest.mark.parametrize("rule", list(EntropyRule))
def test_passes_the_splitter_kit_alone_and_in_stacks(windowed: Path, rule: EntropyRule) -> None:
    model = Entropy(model=str(windowed)).loaded()
    typical = b"In the beginning God created the heavens and the earth."
    threshold = between_entropies(model, typical) if rule is EntropyRule.GLOBAL else 0.0
    splitter = Entropy(model=str(windowed), rule=rule, threshold=threshold)
    check_splitter(splitter, stacks=[[splitter, WordPair()], [Whitespace(), splitter]], max_examples=15, max_bytes=96)


def test_a_spec_names_it_and_a_run_pins_its_model(windowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(windowed.parent)
    text = f'[[levels]]\ndim = 32\n[[levels]]\nsplitter = {{ kind = "entropy", model = "{windowed.name}" }}\n'
    spec = parse_spec(text)
    assert spec.levels[1].splitter == Entropy(model=windowed.name)
    assert not is_resolved(spec)
    pinned = pin_splitters(spec).levels[1].splitter
    ckpt = windowed / "checkpoints" / "step-00000000"
    assert pinned.model == str(ckpt.absolute()) and pinned.is_pinned
    assert pinned.sha256 == checkpoints.sha256(ckpt / "model.safetensors")
    # The pinned spec reads back as it was written, from any working directory.
    again = parse_spec(dump_spec(pin_splitters(spec)))
    assert again.levels[1].splitter == pinned
    monkeypatch.chdir("/")
    assert levels([pinned], b"a b") == levels([Entropy(model=str(windowed))], b"a b")
    with pytest.raises(SpecError, match=r"levels\[1\]\.splitter\.threshold: must be between -16 and 16 bits"):
        parse_spec(text.replace('" }', '", threshold = 99.0 }'))
    with pytest.raises(SpecError, match=r"levels\[1\]\.splitter\.model: missing \(required\)"):
        parse_spec('[[levels]]\n[[levels]]\nsplitter = "entropy"\n')
    with pytest.raises(SpecError, match=r"levels\[1\]\.splitter\.rule: expected one of global, monotonic"):
        parse_spec(text.replace('" }', '", rule = "monotone" }'))


def spec_text(splitter: str) -> str:
    """A two-level AU-Net whose level 1 has ``splitter`` (TOML)."""
    stage = 'stage = { kind = "transformer", layers = 1, head_dim = 16 }'
    return f"[[levels]]\ndim = 32\n{stage}\n[[levels]]\ndim = 32\ncontraction = 4.0\nsplitter = {splitter}\n{stage}\n"


def spec_with(model: str, **options: str) -> str:
    extra = "".join(f", {k} = {v}" for k, v in options.items())
    return spec_text(f'{{ kind = "entropy", model = "{model}"{extra} }}')


def pin_error(text: str) -> str:
    """The one line building a model of ``text`` fails with (its splitter pinned, then checked)."""
    with pytest.raises(SpecError) as err:
        build_model(parse_spec(text))
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


def test_every_bad_model_is_one_line(tmp_path: Path, windowed: Path) -> None:
    missing = pin_error(spec_with(str(tmp_path / "nowhere")))
    assert missing.startswith("levels[1].splitter.model: ") and "does not exist" in missing
    assert "aunet train --spec entropy-tiny --out runs/entropy-tiny" in missing
    (tmp_path / "empty-run").mkdir()
    assert "has no checkpoint; train one first" in pin_error(spec_with(str(tmp_path / "empty-run")))
    (tmp_path / "a-file").write_text("x")
    assert "is a file" in pin_error(spec_with(str(tmp_path / "a-file")))

    corrupt = tmp_path / "corrupt"
    shutil.copytree(windowed, corrupt)
    weights = corrupt / "checkpoints" / "step-00000000" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "model.safetensors does not match its SHA-256" in pin_error(spec_with(str(corrupt)))

    pinned = pin_splitters(parse_spec(spec_with(str(windowed)))).levels[1].splitter
    other = random_model(tmp_path / "other", seed=1)
    message = pin_error(spec_with(str(other), sha256=f'"{pinned.sha256}"'))
    assert "holds other weights" in message and pinned.sha256[:12] in message

    gone = pin_error(spec_with(str(tmp_path / "gone" / "step-00000001"), sha256=f'"{pinned.sha256}"'))
    assert (
        "the spec pins the entropy model its run was trained with there" in gone and "put that checkpoint back" in gone
    )

    aunet = tmp_path / "aunet"
    text = spec_with(str(windowed))
    save_checkpoint(build_model(resolve_spec(parse_spec(text))), text, aunet)
    assert "holds an AU-Net of 2 levels; the entropy splitter reads a flat byte model" in pin_error(
        spec_with(str(aunet))
    )


def test_a_pickled_checkpoint_is_refused_and_nothing_is_ever_unpickled(
    tmp_path: Path, windowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old" / "checkpoints" / "step-00000001"
    old.mkdir(parents=True)
    (old / "state.pt").write_bytes(pickle.dumps({"weights": 1}))
    files = {"state.pt": {"bytes": (old / "state.pt").stat().st_size, "sha256": checkpoints.sha256(old / "state.pt")}}
    (old / "meta.json").write_text(json.dumps({"step": 1, "files": files}))
    assert "records no model.safetensors in its meta.json" in pin_error(spec_with(str(old)))

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    load.cache_clear()
    fresh = random_model(tmp_path / "fresh", seed=2)
    assert len(levels([Entropy(model=str(fresh))], b"some bytes")) == 10


def test_the_model_runs_frozen_in_float64_once_per_process(windowed: Path) -> None:
    first = Entropy(model=str(windowed)).loaded()
    assert Entropy(model=str(windowed), threshold=1.0).loaded() is first
    parameters = list(first.model.parameters())
    assert all(p.dtype == DTYPE and not p.requires_grad for p in parameters)
    # Loading leaves the caller's random numbers alone (building a model initializes weights).
    load.cache_clear()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    Entropy(model=str(windowed)).loaded()
    assert torch.equal(torch.rand(3), expected)
    assert float(bits(torch.zeros(4))) == pytest.approx(2.0)


def test_its_forward_counts_in_the_flops_per_byte(windowed: Path) -> None:
    small = parse_spec(FLAT.format(context=24))
    stage = small.levels[0].stage
    expected = 2 * stage.parameter_count(dim=32) + 2 * 32 * 1 * 24 + 2 * 32 * 259
    assert forward_flops_per_byte(small) == pytest.approx(expected)
    with_model = account(resolve_spec(parse_spec(spec_with(str(windowed)))))
    plain = account(resolve_spec(parse_spec(spec_text('"whitespace"'))))
    assert with_model.splitter_flops_per_byte == pytest.approx(expected)
    assert with_model.flops_per_byte == pytest.approx(plain.flops_per_byte + expected)
    assert "splitters' models, forward only (frozen)" in with_model.as_toml_comments()


def test_the_command_line_reports_a_missing_model_in_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "blt.toml"
    spec.write_text(spec_with(str(tmp_path / "runs" / "entropy-tiny")))
    checked = run_cli("spec", "check", str(spec))
    assert checked.returncode == 2
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == 1 and "levels[1].splitter.model: " in lines[0] and "does not exist" in lines[0], lines
