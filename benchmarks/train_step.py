"""Training-step throughput on CPU: forward + backward bytes per second at equal batch bytes.

Specs: byte-tiny (a flat byte transformer), aunet2-tiny (about the same parameters), aunet3-tiny
and aunet4-tiny. Each step is 8 rows of 1,024 bytes of the embedded corpus, timed interleaved,
medians, with static shapes (what training and ``torch.compile`` use) and eager shapes.

Host synchronisations per step are counted on the trainer's own ``Trainer.step()`` (forward,
backward and optimizer) with the same batch shape, by ``aunet.testing.syncs.count_host_syncs``.

Pooling and upsampling share: during one step, forward hooks capture the inputs of every pooler
and upsampler; those calls are then replayed alone (forward and backward, same shapes, together
with the boundary indexing that feeds them) and timed interleaved with full steps. The share is
replay time / step time.
"""

from __future__ import annotations

from typing import Any

from benchmarks.timing import interleaved, median

SPECS = ("byte-tiny", "aunet2-tiny", "aunet3-tiny", "aunet4-tiny")
ROWS, LENGTH = 8, 1024


def _batch(spec: Any, corpus: bytes, rows: int = ROWS, length: int = LENGTH) -> tuple[Any, Any, Any]:
    import torch

    import aunet
    from aunet.core.tokens import BOS, IGNORE

    tokens, levels = [], []
    stride = len(corpus) // rows
    for r in range(rows):
        chunk = corpus[r * stride : r * stride + length]  # BOS + 1,024 bytes: inputs and targets
        tokens.append(aunet.encode(chunk))
        levels.append(aunet.compute_levels(spec, chunk))
    tokens, levels = torch.stack(tokens), torch.stack(levels)
    targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == BOS, IGNORE)
    return tokens[:, :-1], levels[:, :-1], targets


def _replay(model: Any, inputs: Any) -> Any:
    """A function that re-runs the captured pooler and upsampler calls, forward and backward."""
    import torch

    from aunet.core.model import boundary_index

    pool_calls, up_calls, boundary_calls = inputs

    def run() -> None:
        total = 0.0
        for mask, capacity in boundary_calls:
            boundary_index(mask, capacity)
        for module, (x, index) in pool_calls:
            total = total + module(x.detach().requires_grad_(), index).float().square().mean()
        for module, (coarse, segment, offset) in up_calls:
            total = total + module(coarse.detach().requires_grad_(), segment, offset).float().square().mean()
        torch.autograd.backward(total)

    return run


def _syncs_per_step(name: str, shapes: str, device: Any, rows: int = ROWS, length: int = LENGTH) -> int:
    """Host synchronisations of one ``Trainer.step()`` (after a first step)."""

    import aunet
    from aunet.core.encoding import splitter_encoding
    from aunet.core.overrides import apply_overrides
    from aunet.jobs.data.corpus import load_corpus
    from aunet.jobs.data.packing import TrainingData, encode_documents
    from aunet.jobs.train.trainer import Trainer
    from aunet.testing.syncs import count_host_syncs

    spec = apply_overrides(
        aunet.load_spec(name), [f"train.shapes={shapes}", f"train.batch_size={rows}", f"model.context={length}"]
    )
    docs = encode_documents(load_corpus(None).train[:4], splitter_encoding(spec))
    model = aunet.build_model(spec, device=device)
    trainer = Trainer(
        model.spec, model, data=TrainingData(docs, context=length, batch_size=rows, seed=0), device=device
    )
    trainer.step(0.0)
    with count_host_syncs() as syncs:
        trainer.step(0.5)
    return syncs.total


def run(rounds: int = 9, device: str = "cpu", rows: int = ROWS, length: int = LENGTH) -> list[dict[str, Any]]:
    import torch

    import aunet
    from aunet.core import model as model_module
    from aunet.core.accounting import account
    from aunet.core.resources import read_corpus, spec_path
    from aunet.jobs.data.packing import Batch
    from aunet.jobs.runtime.devices import resolve_device

    device = resolve_device(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    corpus = read_corpus("en_web")
    configs: dict[tuple[str, str], Any] = {}
    sizes: dict[str, Any] = {}
    replays: dict[str, Any] = {}
    for name in SPECS:
        spec = aunet.load_spec(spec_path(name))
        model = aunet.build_model(spec, device=device)
        tokens, levels, targets = _batch(spec, corpus, rows, length)
        sizes[name] = (account(spec), sum(p.numel() for p in model.parameters()))
        # As the trainer does: eager capacities computed on the host, no document mask for rows
        # of a single document.
        eager = Batch(tokens.numpy(), levels.numpy(), targets.numpy()).capacity(model.depth)
        tokens, levels, targets = tokens.to(device), levels.to(device), targets.to(device)
        for mode, capacity in (("static", None), ("eager", eager)):

            def step(model=model, tokens=tokens, levels=levels, targets=targets, capacity=capacity) -> None:
                model.zero_grad(set_to_none=True)
                model(tokens, levels, targets, capacity=capacity, doc_mask=False).loss.backward()
                sync()

            configs[(name, mode)] = step
        if spec.depth:
            captured: tuple[list, list, list] = ([], [], [])
            hooks = [p.register_forward_hook(lambda m, args, out: captured[0].append((m, args))) for p in model.poolers]
            hooks += [
                u.register_forward_hook(lambda m, args, out: captured[1].append((m, args))) for u in model.upsamplers
            ]
            original = model_module.boundary_index

            def spy(mask: Any, capacity: Any) -> Any:
                captured[2].append((mask, capacity))
                return original(mask, capacity)

            model_module.boundary_index = spy
            try:
                configs[(name, "static")]()
            finally:
                model_module.boundary_index = original
                for h in hooks:
                    h.remove()
            replay = _replay(model, captured)
            replays[name] = lambda replay=replay: (replay(), sync())
            configs[(name, "pool+upsample")] = replays[name]

    syncs = {
        (name, mode): _syncs_per_step(name, mode, device, rows, length)
        for name in SPECS
        for mode in ("static", "eager")
    }
    times = interleaved(configs, rounds=rounds)
    step_bytes = rows * length
    base = {mode: step_bytes / median(times[("byte-tiny", mode)]) for mode in ("static", "eager")}
    records = []
    for name in SPECS:
        sizes_, params = sizes[name]
        for mode in ("static", "eager"):
            seconds = median(times[(name, mode)])
            record = {
                "spec": name,
                "shapes": mode,
                "parameters": params,
                "flops_per_byte": sizes_.flops_per_byte,
                "batch_bytes": step_bytes,
                "step_s": round(seconds, 4),
                "bytes_per_s": round(step_bytes / seconds, 1),
                "vs_byte_tiny": round(step_bytes / seconds / base[mode], 3),
                "rounds": rounds,
                "host_syncs_per_step": syncs[(name, mode)],
                "device": str(device),
            }
            if (name, "pool+upsample") in times and mode == "static":
                record["pool_upsample_share"] = round(median(times[(name, "pool+upsample")]) / seconds, 4)
            records.append(record)
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [
        f"{'spec':<13} {'shapes':<7} {'params':>10} {'bytes/s':>9} {'vs byte-tiny':>13} {'pool+up share':>14} "
        f"{'host syncs/step':>16}"
    ]
    for r in records:
        share = f"{100 * r['pool_upsample_share']:.1f}%" if "pool_upsample_share" in r else ""
        lines.append(
            f"{r['spec']:<13} {r['shapes']:<7} {r['parameters']:>10,} {r['bytes_per_s']:>9,.0f} "
            f"{r['vs_byte_tiny']:>12.2f}x {share:>14} {r['host_syncs_per_step']:>16}"
        )
    return "\n".join(lines)
