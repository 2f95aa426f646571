"""Devices, threads and host synchronisations: the job path runs on any device, library calls
leave the process's threads alone, and a training step never waits for the device."""

from __future__ import annotations

import json

import pytest
import torch

import aunet
from aunet.core.encoding import splitter_encoding
from aunet.core.errors import InputError
from aunet.core.overrides import apply_overrides
from aunet.jobs.data.corpus import load_corpus
from aunet.jobs.data.packing import TrainingData, encode_documents
from aunet.jobs.runtime.devices import parse_threads, resolve_device, rng_state, set_rng_state, threads
from aunet.jobs.train.trainer import Trainer
from aunet.testing.syncs import count_host_syncs

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="needs a CUDA device; this machine has none (CPU-only torch or no GPU)"
)


def small_trainer(shapes: str, device: torch.device, name: str = "aunet2-tiny", **overrides: str) -> Trainer:
    spec = apply_overrides(
        aunet.load_spec(name),
        [
            f"train.shapes={shapes}",
            "train.batch_size=2",
            "model.context=256",
            *(f"{k}={v}" for k, v in overrides.items()),
        ],
    )
    docs = encode_documents(load_corpus(None).train[:3], splitter_encoding(spec))
    torch.manual_seed(0)
    model = aunet.build_model(spec, device=device)
    data = TrainingData(docs, context=256, batch_size=2, seed=0)
    return Trainer(model.spec, model, data=data, device=device)


@pytest.mark.parametrize("shapes", ["static", "eager"])
def test_training_steps_do_not_synchronise_with_the_host(shapes: str) -> None:
    trainer = small_trainer(shapes, torch.device("cpu"), **{"train.grad_accum": "2"})
    trainer.step(0.0)
    with count_host_syncs() as syncs:
        for _ in range(3):
            trainer.step(0.5)
    assert syncs.total == 0, dict(syncs.calls)


def test_a_routed_training_step_does_not_synchronise_with_static_shapes() -> None:
    # H-Net's dynamic chunking decides level 1's boundaries on the device; with static shapes the
    # level keeps a fixed number of segments, so nothing is read back.
    trainer = small_trainer("static", torch.device("cpu"), "hnet-tiny", **{"train.grad_accum": "2"})
    trainer.step(0.0)
    with count_host_syncs() as syncs:
        for _ in range(3):
            trainer.step(0.5)
    assert syncs.total == 0, dict(syncs.calls)


def test_a_routed_level_with_eager_shapes_costs_one_sync_per_forward() -> None:
    # The stated exception: eager shapes size a routed level to its batch's largest row, which
    # only the device knows; one read per routed level per micro-batch, in the model.
    trainer = small_trainer("eager", torch.device("cpu"), "hnet-tiny", **{"train.grad_accum": "2"})
    trainer.step(0.0)
    with count_host_syncs() as syncs:
        for _ in range(3):
            trainer.step(0.5)
    assert syncs.total == 3 * 2 and all("model.py" in site for site in syncs.calls), dict(syncs.calls)


def test_the_sync_counter_counts_reads_in_aunet_code() -> None:
    # The counter must see what the old trainer did every step: reading the loss back, and the
    # eager forward's `int(count.max())` per level.
    model = aunet.build_model(aunet.load_spec("aunet3-tiny"))
    tokens = aunet.encode(b"The cat sat on the mat. " * 4)[None]
    levels = aunet.compute_levels(model.spec, b"The cat sat on the mat. " * 4)[None]
    with count_host_syncs() as syncs:
        out = model(tokens, levels, shapes=aunet.ShapeMode.EAGER)
        float(out.logits.sum().detach())
    assert syncs.total >= 2 and any("model.py" in site for site in syncs.calls), dict(syncs.calls)
    with count_host_syncs() as syncs:
        model(tokens, levels, capacity=[20, 10])
    assert syncs.total == 0, dict(syncs.calls)


def test_devices_resolve_and_refuse_what_is_not_there() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else resolve_device("auto").type)
    with pytest.raises(InputError, match="is not a device; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu7")
    if not CUDA:
        with pytest.raises(InputError, match=r"--device cuda: .*; use --device cpu"):
            resolve_device("cuda")
        with pytest.raises(InputError, match=r"--device cuda:1: "):
            resolve_device("cuda:1")


def test_thread_setting_is_parsed_and_restored() -> None:
    assert parse_threads("auto") is None and parse_threads("3") == 3
    with pytest.raises(InputError, match="at least 1"):
        parse_threads("0")
    with pytest.raises(InputError, match="whole number or 'auto'"):
        parse_threads("two")
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_generation_leaves_the_process_threads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model = aunet.build_model(aunet.load_spec("aunet2-tiny")).eval()
    calls: list[int] = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), original(n)))
    before = torch.get_num_threads()
    aunet.generate(model, [b"abc"], 5)
    assert calls == []  # not asked: not touched
    aunet.generate(model, [b"abc"], 5, threads=1)
    assert torch.get_num_threads() == before and (calls == [1, before] or before == 1)


@pytest.mark.parametrize(
    ("precision", "checkpointing"), [("float32", "none"), ("bfloat16", "full"), ("auto", "selective")]
)
def test_the_memory_check_reads_the_accountings_estimate(
    monkeypatch: pytest.MonkeyPatch, precision: str, checkpointing: str
) -> None:
    from aunet.core.accounting import account
    from aunet.core.spec import Checkpointing, Precision, resolve_spec
    from aunet.jobs.runtime import devices

    spec = resolve_spec(
        apply_overrides(
            aunet.load_spec("aunet2-tiny"),
            [f"train.precision={precision}", f"train.activation_checkpointing={checkpointing}"],
        )
    )
    cpu = torch.device("cpu")
    estimate = account(spec).memory_for(
        Precision.BFLOAT16 if precision == "bfloat16" else Precision.FLOAT32, Checkpointing(checkpointing)
    )
    need = estimate.state_bytes + int(estimate.activation_bytes_per_row * spec.train.batch_size)
    monkeypatch.setattr(devices, "available_memory", lambda device: need)
    devices.check_fits(spec, cpu)  # exactly what the estimate needs: fits
    monkeypatch.setattr(devices, "available_memory", lambda device: need - 1)
    with pytest.raises(InputError, match=f"needs at least {need / 2**30:,.1f} GiB .*AdamW state "):
        devices.check_fits(spec, cpu)


def test_random_states_round_trip_as_plain_data() -> None:
    import json
    import random

    import numpy as np

    state = json.loads(json.dumps(rng_state()))  # what a checkpoint stores
    expected = (torch.rand(3), random.random(), np.random.rand())
    assert set_rng_state(state) == []
    assert (
        torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1] and np.random.rand() == expected[2]
    )


def test_cuda_states_from_a_gpu_machine_restore_on_a_cpu_with_a_notice() -> None:
    state = {**rng_state(), "cuda": [torch.cuda.get_rng_state().tolist() if CUDA else [0] * 16]}
    notices = set_rng_state(state)
    if not CUDA:
        assert len(notices) == 1 and "CUDA random state of 1 device(s)" in notices[0]


def test_a_cpu_checkpoint_loads_on_the_asked_device(tmp_path) -> None:
    from aunet.jobs.train.loop import train

    spec = apply_overrides(
        aunet.load_spec("aunet2-tiny"),
        ["model.context=128", "train.batch_size=2", "train.sample.bytes=0", "train.eval.every=1000"],
    )
    corpus = tmp_path / "c.txt"
    corpus.write_text("In the beginning God created the heavens and the earth.\n" * 60)
    train(spec, data=corpus, out=tmp_path / "run", steps=2, device="cpu")
    run = aunet.load_run(tmp_path / "run", device="cpu")
    assert run.step == 2 and next(run.model.parameters()).device.type == "cpu" and not run.model.training
    assert run.spec.levels[1].contraction is not None  # measured on the training data, recorded


# -- CUDA (skipped with a reason on CPU-only machines) ------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("shapes", ["static", "eager"])
def test_cuda_training_steps_never_synchronise(shapes: str) -> None:
    trainer = small_trainer(shapes, torch.device("cuda"), **{"train.precision": "bfloat16"})
    trainer.step(0.0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.step(0.5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.divergence() is None


@pytest.mark.gpu
@needs_cuda
def test_cuda_sampling_and_teacher_forcing() -> None:
    model = aunet.build_model(aunet.load_spec("aunet3-tiny"), device="cuda").eval()
    a = aunet.generate(model, [b"In the beginning", b"x"], 30, temperature=0.8, top_k=20, seed=3)
    b = aunet.generate(model, [b"In the beginning", b"x"], 30, temperature=0.8, top_k=20, seed=3)
    assert a == b
    greedy = aunet.generate(model, [b"In the beginning"], 30)[0]
    from aunet.jobs.inference.generate import generate_recompute

    assert greedy == generate_recompute(model, [b"In the beginning"], 30)[0]


@pytest.mark.gpu
@needs_cuda
def test_cuda_run_reports_its_utilisation_and_device_memory(tmp_path) -> None:
    from aunet.jobs.config import parse_spec
    from aunet.jobs.runtime.devices import matmul_peak
    from aunet.jobs.train.loop import train

    from conftest import TEXT, TINY

    (tmp_path / "c.txt").write_text(TEXT)
    summary = train(
        parse_spec(TINY, name="tiny"), data=tmp_path / "c.txt", out=tmp_path / "run", steps=3, device="cuda"
    )
    t = summary.throughput
    assert t.peak_device_memory is not None and t.peak_device_memory > 0 and 0 < t.mfu < 1
    assert matmul_peak("cuda", torch.cuda.current_device(), True) > 1e12  # any GPU of this decade
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["peak_device_memory_bytes"] > 0 for r in records if "loss" in r)
