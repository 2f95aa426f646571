"""Decoding speed: bytes per second of byte-tiny, bpe-tiny, aunet2-tiny and aunet3-tiny, batches of
1, 16 and 64 rows, eager and compiled steps, beside the FLOPs each byte costs and the fraction of
the machine's measured matmul throughput that makes.

Every configuration decodes through ``decode``, the loop ``aunet.generate`` runs (prefill, then
one step per byte or token, each row's level from its streaming splitter), with random weights,
one thread, 512-byte prompts from the embedded corpus (a different place for every row). The
bytes chosen are the corpus's own continuation of each prompt, replayed: greedy choices of random
weights would end rows at an early EOS or repeat one byte forever, which gives a hierarchy no word
boundaries (its deep stages would never run) and times nothing real. The BPE model's tokens are
its tokenizer's encoding of the same continuation (its tokenizer is trained on the embedded
corpus, as a run's is), so both decode the same text. A decoding rate is the bytes chosen after
each row's first (which comes from the prefill's logits) over the time from the prefill's end to
the decode's end: the steps alone. (Until 2026-12-07 it was the difference between decoding
``NEW`` bytes and decoding 1, two whole decodes whose prefills, at 64 rows longer than the steps,
added their noise to it.) Medians of interleaved rounds: each round decodes every configuration
once, in turn.

FLOPs per byte are the forward's (a third of the accounting's training figure, poolers,
upsamplers and head included; attention over the context's share, as the accounting counts it).
The matmul throughput is measured in the same run: a (rows, 320) x (320, 1280) product, the
largest stage's feed-forward at each batch size, on one thread.

Bytes read per byte are counted, not timed: one more decode of each configuration (a compiled
one's steps uncompiled, with the shapes they compile) under a dispatch mode that adds up the operands of
every matrix product and attention call (weights, activations, cached keys and values, masks) and
twice what a gather copies, less the same count for decoding 1 byte. A step's weights and cached
keys (megabytes to hundreds of them) do not fit a core's own caches, so steps are largely bound by
moving them: were both models to move bytes at the same rate, aunet2-tiny could be at most
(byte-tiny's bytes read per byte) / (its own) times faster, the ``bound`` column. It is a bound at
equal rates, not a physical one: a model that moved its bytes faster than byte-tiny moves its own
could pass it. The achieved GB/s is the count times the measured rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.timing import interleaved_from_start, median

SPECS = ("byte-tiny", "bpe-tiny", "aunet2-tiny", "aunet3-tiny")
BATCHES = (1, 16, 64)
MODES = ("eager", "compiled")
PROMPT = 512  # bytes per prompt, by default
NEW = 33  # bytes per timed call of a byte model (32 steps after the first byte)
NEW_BPE = 112  # about as many steps of the BPE model (about 3.5 bytes per token)
WIDTH = 320  # the widest stage of the tiny specs: the matmul the throughput is measured on
MAX_PROMPT = 1024 - 1 - NEW  # the tiny specs' context (positions) less a BOS and the bytes decoded


def _models(device: str, specs: tuple[str, ...]) -> dict[str, tuple[Any, Any, float]]:
    """name -> (model, encoding, forward FLOPs per byte); the BPE model with its tokenizer."""
    import torch

    import aunet
    from aunet.core.accounting import account
    from aunet.core.resources import spec_path
    from aunet.jobs.data.bpe import BpeEncoding, bytes_per_token, trained_tokenizer, with_bytes_per_token
    from aunet.jobs.data.corpus import load_corpus

    models = {}
    for name in specs:
        torch.manual_seed(0)
        spec = aunet.load_spec(spec_path(name))
        encoding = None
        if spec.model.bpe:
            corpus = load_corpus(None)
            tokenizer = trained_tokenizer(spec.model.tokenizer, corpus)
            spec = with_bytes_per_token(spec, bytes_per_token(tokenizer, (d.data for d in corpus.train)))
            encoding = BpeEncoding.of(tokenizer, spec)
        model = aunet.build_model(spec, device=device).eval()
        models[name] = (model, encoding, account(spec).flops_per_byte_all / 3)
    return models


def _rows(batch: int, prompt: int = PROMPT) -> tuple[list[bytes], list[bytes]]:
    """``batch`` prompts of ``prompt`` bytes and the text that follows each, from the embedded corpus."""
    from aunet.core.resources import read_corpus

    corpus = read_corpus("en_web")
    prompts, continuations = [], []
    for row in range(batch):
        start = corpus.find(b"\n", 100_000 + 9_973 * row) + 1
        prompts.append(corpus[start : start + prompt])
        continuations.append(corpus[start + prompt : start + prompt + 4 * NEW_BPE])
    return prompts, continuations


def check_prompt(prompt: int) -> None:
    """A clear error for a prompt length the tiny specs cannot decode NEW more bytes after: their
    context (1,024 positions) holds a BOS, the prompt and the bytes decoded."""
    if not 1 <= prompt <= MAX_PROMPT:
        raise ValueError(
            f"prompt bytes must be 1 to {MAX_PROMPT} (the tiny specs' context of 1,024 positions less a BOS "
            f"and the {NEW} bytes each row decodes), got {prompt}"
        )


def _decoder(
    model: Any,
    encoding: Any,
    prompts: list[bytes],
    ids: list[list[int]],
    new: int,
    mode: str,
    after_prefill: Any = None,
) -> Any:
    """A call that decodes ``new`` bytes per row, replaying ``ids``; returns the bytes decoded
    (all rows) and the decoding steps run. ``after_prefill``, if given, is called once the
    prompts are prefilled, before the first step."""
    import torch

    from aunet.jobs.inference.generate import decode

    def call() -> tuple[int, int]:
        rows = [iter(row) for row in ids]
        pending = [after_prefill] if after_prefill is not None else []

        def choose(logits: Any) -> Any:
            while pending:  # the first choice, of the prefill's logits
                if logits.device.type == "cuda":  # the prefill's kernels end before a clock starts
                    torch.cuda.synchronize(logits.device)
                pending.pop()()
            return torch.tensor([next(row) for row in rows], device=logits.device)

        result = decode(model, prompts, new, choose=choose, encoding=encoding, step_mode=mode, threads=1)
        return sum(len(b) for b in result.new_bytes), result.stage_calls[0]

    return call


def _steps_decoder(
    model: Any, encoding: Any, prompts: list[bytes], ids: list[list[int]], new: int, mode: str
) -> Callable[[Callable[[], None]], tuple[int, int]]:
    """``_decoder``'s call as ``call(start)``: ``start()`` is called once the prompts are
    prefilled (``timed_from_start`` times the steps from there)."""
    return lambda start: _decoder(model, encoding, prompts, ids, new, mode, after_prefill=start)()


#: aten ops whose tensor operands are read whole: matrix products and attention kernels. Steps
#: run under ``torch.inference_mode``, where composite ops (linear, matmul, attention) reach a
#: dispatch mode whole; outside it, their decompositions (mm, the attention kernels) do.
_READ_WHOLE = frozenset(
    {
        "linear",
        "matmul",
        "scaled_dot_product_attention",
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "mv",
        "addmv",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    }
)
#: aten ops that copy what they select: read once and written once (their output, twice).
_COPY_SELECTED = frozenset({"index_select", "gather", "embedding"})


def _bytes_read(call: Any) -> int:
    """Bytes that ``call()``'s matrix products and attention read, and its gathers copy. Compiled
    steps run uncompiled here, with the shapes they compile (their buckets of rows and of each
    cache's slots): a dispatch mode sees nothing inside a compiled graph."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from aunet.core import decoding

    total = 0

    def size(t: Any) -> int:
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            nonlocal total
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name in _READ_WHOLE:
                total += sum(size(a) for a in (*args, *(kwargs or {}).values()))
            elif name in _COPY_SELECTED:
                total += 2 * size(out)
            return out

    with decoding.shapes_only(), Count():
        call()
    return total


def _matmul_flops(batch: int, rounds: int, device: str, smoke: bool = False) -> float:
    """FLOP/s of a (batch, WIDTH) x (WIDTH, 4 WIDTH) matmul (one thread on a CPU), median of many
    calls (``smoke``: of a few, which only checks that it runs)."""
    import time

    import torch

    x, w = torch.randn(batch, WIDTH, device=device), torch.randn(WIDTH, 4 * WIDTH, device=device)
    calls = 50 if smoke else max(50, 20_000 // batch)
    times = []
    with torch.no_grad():
        for _ in range(max(3, rounds)):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(x, w)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / calls)
    return 2 * batch * WIDTH * 4 * WIDTH / median(times)


def run(
    rounds: int = 3,
    smoke: bool = False,
    device: str = "cpu",
    specs: tuple[str, ...] = SPECS,
    modes: tuple[str, ...] = MODES,
    reads: bool = True,
    prompt: int = PROMPT,
    batches: tuple[int, ...] | None = None,
) -> list[dict[str, Any]]:
    """``smoke``: batches of 1 and 2 rows, one round: checks that the script runs. ``device``:
    where the models decode (the GPU check runs this on CUDA, where compiled steps are captured
    as CUDA graphs); ``specs``: which of SPECS (byte-tiny always: the ratios are against it);
    ``modes``: which step modes; ``reads``: count the bytes read per byte (None when not);
    ``prompt``: bytes per prompt; ``batches``: the numbers of rows (default BATCHES)."""
    import torch

    check_prompt(prompt)
    torch.set_num_threads(1)
    batches = batches or ((1, 2) if smoke else BATCHES)
    rounds = 1 if smoke else rounds
    models = _models(device, tuple(dict.fromkeys(("byte-tiny", *specs))))
    calls: dict[tuple[str, int, str], Any] = {}  # call(start): decodes NEW, calls start() after the prefill
    produced: dict[tuple[str, int, str, int], tuple[int, int]] = {}
    traffic: dict[tuple[str, int, str], float] = {}  # bytes read per byte decoded
    for batch in batches:
        prompts, continuations = _rows(batch, prompt)
        for name, (model, encoding, _) in models.items():
            if encoding is None:
                ids = [list(c) for c in continuations]
                new = NEW
            else:
                ids = [encoding.tokenizer.encode(c).tolist() for c in continuations]
                new = NEW_BPE
            for mode in modes:
                # Each row's first byte (a BPE model's first token) is chosen from the prefill's
                # logits, before any step: the bytes the steps make are the rest.
                produced[(name, batch, mode, 1)] = _decoder(model, encoding, prompts, ids, 1, mode)()
                call = _steps_decoder(model, encoding, prompts, ids, new, mode)
                calls[(name, batch, mode)] = call
                produced[(name, batch, mode, new)] = call(lambda: None)  # also compiles what the steps need
                if not reads:
                    continue
                read = [_bytes_read(_decoder(model, encoding, prompts, ids, n, mode)) for n in (new, 1)]
                decoded = produced[(name, batch, mode, new)][0] - produced[(name, batch, mode, 1)][0]
                traffic[(name, batch, mode)] = (read[0] - read[1]) / max(1, decoded)
    # The steps of each round; every call has run once already (above), which is its warm-up.
    seconds = interleaved_from_start(calls, rounds=rounds, warmup=0)
    throughput = {batch: _matmul_flops(batch, rounds, device, smoke) for batch in batches}

    records = []
    per_round: dict[tuple[str, int, str], list[float]] = {}
    for batch in batches:
        for mode in modes:
            for name, (_, encoding, flops) in models.items():
                new = NEW if encoding is None else NEW_BPE
                took = seconds[(name, batch, mode)]
                (decoded, steps), (first, _) = produced[(name, batch, mode, new)], produced[(name, batch, mode, 1)]
                rate = (decoded - first) / max(median(took), 1e-9)
                # Each round's rate: the ratios to byte-tiny per round show how much this shared
                # machine moved during the run.
                per_round[(name, batch, mode)] = [(decoded - first) / max(t, 1e-9) for t in took]
                read = traffic.get((name, batch, mode))
                records.append(
                    {
                        "spec": name,
                        "batch": batch,
                        "mode": mode,
                        "bytes_per_s": round(rate, 1),
                        "ms_per_step": round(1e3 * median(took) / max(1, steps), 3),
                        "bytes_per_step": round((decoded - first) / max(1, steps), 2),
                        "flops_per_byte": round(flops),
                        "gflops": round(rate * flops / 1e9, 3),
                        "matmul_gflops": round(throughput[batch] / 1e9, 2),
                        "matmul_fraction": round(rate * flops / throughput[batch], 4),
                        "mb_read_per_byte": round(read / 1e6, 3) if read is not None else None,
                        "read_gb_per_s": round(rate * read / 1e9, 2) if read is not None else None,
                        "rounds": rounds,
                        "prompt_bytes": prompt,
                        "device": device,
                    }
                )
    for r in records:
        base = next(
            x for x in records if x["spec"] == "byte-tiny" and x["batch"] == r["batch"] and x["mode"] == r["mode"]
        )
        r["vs_byte_tiny"] = round(r["bytes_per_s"] / base["bytes_per_s"], 2)
        ratios = [
            mine / theirs
            for mine, theirs in zip(
                per_round[(r["spec"], r["batch"], r["mode"])], per_round[("byte-tiny", r["batch"], r["mode"])]
            )
        ]
        r["vs_byte_tiny_rounds"] = [round(min(ratios), 2), round(max(ratios), 2)]  # lowest and highest round
        # The most ``vs_byte_tiny`` could be were both steps to move bytes at the same rate.
        counted = r["mb_read_per_byte"] is not None
        r["traffic_bound"] = round(base["mb_read_per_byte"] / max(r["mb_read_per_byte"], 1e-9), 2) if counted else None
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [
        f"{'spec':<12} {'batch':>5} {'mode':>9} {'bytes/s':>10} {'vs byte':>8} {'rounds':>11} {'ms/step':>8} {'FLOPs/byte':>11} "
        f"{'GFLOP/s':>8} {'matmul GFLOP/s':>15} {'fraction':>9} {'MB read/byte':>13} {'GB/s':>6} {'bound':>6}"
    ]
    for r in records:
        low, high = r["vs_byte_tiny_rounds"]
        lines.append(
            f"{r['spec']:<12} {r['batch']:>5} {r['mode']:>9} {r['bytes_per_s']:>10,.0f} {r['vs_byte_tiny']:>7.2f}x "
            f"{f'{low:.2f}-{high:.2f}x':>11} "
            f"{r['ms_per_step']:>8.2f} {r['flops_per_byte']:>11.3e} {r['gflops']:>8.2f} {r['matmul_gflops']:>15.2f} "
            f"{r['matmul_fraction']:>8.1%} "
            + (
                f"{r['mb_read_per_byte']:>13.2f} {r['read_gb_per_s']:>6.1f} {r['traffic_bound']:>5.2f}x"
                if r["mb_read_per_byte"] is not None
                else f"{'-':>13} {'-':>6} {'-':>6}"
            )
        )
    return "\n".join(lines)
