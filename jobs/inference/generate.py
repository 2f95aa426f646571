"""Sampling bytes from a model.

``generate`` decodes with per-stage KV caches (``aunet.core.decoding``): the deep stages run only
at boundaries, and each new byte's level comes from a streaming splitter in O(1). ``sample_next``
turns logits into a byte (temperature, top-k, top-p; temperature 0 is greedy) with a generator on
the model's device. ``generate_recompute`` re-runs the whole forward for every new byte: simple,
obviously correct, quadratic; the benchmark's baseline.
"""

from __future__ import annotations

import enum
import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from aunet.core.decoding import STEP_MODES, StepMode, chunk_refusal, new_state, prefill, prefill_chunks, splice, step
from aunet.core.encoding import Encoding, splitter_encoding
from aunet.core.errors import InputError
from aunet.core.tokens import BOS, EOS, PAD
from aunet.jobs.runtime.devices import threads as thread_count
from aunet.jobs.runtime.files import input_file


def sample_next(
    logits: Tensor, *, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> Tensor:
    """(B, V) logits -> (B,) token ids among bytes and EOS (BOS and PAD are never sampled)."""
    logits = logits.float().clone()
    logits[:, BOS] = float("-inf")
    logits[:, PAD] = float("-inf")
    if temperature <= 0:
        return logits.argmax(-1)
    # Shifted so that the largest is 0 before dividing: however small the temperature (1e-45),
    # nothing overflows to inf (which softmax would turn into NaN); it only tends to greedy.
    logits = logits.double()  # a float32 temperature below 1.4e-45 would be 0
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@attrs.frozen
class Decoded:
    """What ``decode`` produced."""

    new_bytes: list[bytes]
    logits: list[list[Tensor]]  # per row, the (V,) logits each new token was chosen from
    trunk_calls: int
    stage_calls: tuple[int, ...]
    truncated: tuple[int, ...]  # prompt bytes dropped from the left, per row
    levels: list[list[int]] = attrs.Factory(list)  # per row, each new byte's predicted level (keep_logits)


class LevelSource(enum.Enum):
    """Where a new position's level comes from while decoding."""

    SPLITTER = "splitter"  # the encoding (a byte model's streaming splitters)
    PREDICTED = "predicted"  # the model's level head


def decode(
    model: Any,
    prompts: Sequence[bytes],
    max_new_bytes: int,
    *,
    choose: Callable[[Tensor], Tensor],
    encoding: Encoding | None = None,
    stop: Sequence[bytes] = (),
    on_bytes: Callable[[int, bytes], None] | None = None,
    keep_logits: bool = False,
    threads: int | None = None,
    levels: LevelSource | str = LevelSource.SPLITTER,
    step_mode: StepMode | str | None = None,
    batch_size: int | None = None,
    prefill_chunk: int | None = None,
) -> Decoded:
    """Prefill, then pick and append one id per row at a time with ``choose`` ((B, V) logits ->
    (B,) ids) until EOS, a stop sequence or ``max_new_bytes``. ``encoding``: how the model reads
    (default: its spec's splitters; a BPE model needs its run's, ``load_run(DIR).encoding``).
    ``threads``: torch threads for the decoding steps (None leaves the process's setting alone).
    Memory stays bounded by the model's context whatever ``max_new_bytes`` is. ``levels``: where
    new positions' levels come from, the ``encoding`` or the model's level head (``predicted``:
    the argmax of its logits at the position that chose the byte; the prompt's levels still come
    from the encoding). ``step_mode``: how steps run (``generate``'s argument). ``batch_size``:
    rows decoded at once (None: every prompt); a row that finishes takes the next waiting prompt,
    prefilled apart and spliced into the batch, so the batch stays full (continuous batching).
    ``prefill_chunk``: prefill prompts in walks of this many positions (0: whole; None: the
    device's default, ``default_prefill_chunk``), which bounds a prefill's attention masks and
    activations by the chunk, not the prompt; the same logits to float rounding.
    Everything returned is in prompt order; ``on_bytes`` gets the prompt's index."""
    if max_new_bytes < 0:
        raise ValueError(f"max_new_bytes must be >= 0, got {max_new_bytes}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (rows decoded at once), got {batch_size}")
    check_prefill_chunk(model, prefill_chunk)
    if prefill_chunk is None:
        prefill_chunk = default_prefill_chunk(model)
    if not prompts:  # nothing to decode
        return Decoded([], [], 0, (0,) * (model.depth + 1), (), [])
    predicted = check_levels_source(model, levels) is LevelSource.PREDICTED
    spec = model.spec
    encoding = encoding if encoding is not None else splitter_encoding(spec)
    device = next(model.parameters()).device
    limit = spec.model.context - 1  # prompt positions after BOS
    rows = [encoding.prompt(bytes(p), limit) for p in prompts]
    for i, row in enumerate(rows):
        if row.dropped:
            warnings.warn(
                f"prompt {i} is longer than the model's context ({spec.model.context} positions with "
                f"BOS); kept its last {limit:,} {encoding.unit}, dropped {row.dropped:,} bytes",
                RuntimeWarning,
                stacklevel=3,
            )
    n = len(rows)
    b = n if batch_size is None else max(1, min(batch_size, n))
    width = max(len(row.ids) for row in rows) + 1
    if encoding.id_count < model.vocab_size:  # ids the encoding never makes are never chosen
        choose_any = choose

        def choose(logits: Tensor) -> Tensor:
            logits = logits.clone()
            logits[:, encoding.id_count :] = float("-inf")
            return choose_any(logits)

    # Memory is bounded by the context, however many bytes are asked for: every stage keeps at
    # most `context` positions (a ring). Up to the context the logits are the teacher-forced
    # forward's; past it each stage attends to its last `context` positions.
    # A static step keeps its shapes (a compiled one its graph) for any prompt and length: its
    # caches always hold the context.
    mode = check_step_mode(step_mode, device)
    capacity = min(width + max_new_bytes, spec.model.context) if mode is StepMode.EAGER else spec.model.context
    state = new_state(model, b, capacity, mode=mode)
    was_training = model.training
    model.eval()
    produced = [bytearray() for _ in range(n)]
    kept: list[list[Tensor]] = [[] for _ in range(n)]
    kept_levels: list[list[int]] = [[] for _ in range(n)]
    taken = [0] * n  # ids chosen per prompt: at most max_new_bytes, even for ids of no bytes
    slot: list[int | None] = list(range(b))  # the prompt each batch row decodes (None: nothing left)
    waiting = iter(range(b, n))  # prompts for rows that finish (continuous batching)

    def fill(into: Any, prompt_rows: Sequence[Any]) -> Tensor:
        batch = _prompt_batch(spec, prompt_rows, device)
        if prefill_chunk == 0:
            return prefill(model, into, *batch)
        return prefill_chunks(model, into, *batch, chunk=prefill_chunk)

    try:
        logits = fill(state, [rows[i] for i in range(b)])
        alive = [max_new_bytes > 0] * b
        with thread_count(threads):
            while True:
                chosen = choose(logits)  # (B,)
                chosen_ids = chosen.tolist()
                guessed = state.level_logits.argmax(-1).tolist() if predicted else None
                level = []
                for r in range(b):
                    i = slot[r]
                    if alive[r] and keep_logits:
                        kept[i].append(logits[r].detach().clone())
                    if not alive[r] or chosen_ids[r] == EOS:
                        alive[r] = False
                        level.append(0)
                        continue
                    piece = rows[i].stream.push(chosen_ids[r])
                    taken[i] += 1
                    new = piece.data[: max_new_bytes - len(produced[i])]
                    level.append(guessed[r] if guessed is not None else piece.level)
                    produced[i] += new
                    if keep_logits and guessed is not None:
                        kept_levels[i].append(guessed[r])
                    if on_bytes is not None and new:
                        on_bytes(i, new)
                    if (
                        any(produced[i].endswith(s) for s in stop if s)
                        or len(produced[i]) >= max_new_bytes
                        or taken[i] >= max_new_bytes
                    ):
                        alive[r] = False
                if any(alive):
                    fed = torch.where(chosen == EOS, 0, chosen)  # an ended row's input is never read
                    logits = step(model, state, fed, level, alive)
                # Finished rows take the next waiting prompts: prefilled apart (together, when
                # several rows finished at once) and spliced in.
                refill = []
                for r in range(b):
                    if alive[r] or slot[r] is None or max_new_bytes == 0:
                        continue
                    slot[r] = next(waiting, None)
                    if slot[r] is not None:
                        refill.append(r)
                if refill:
                    fresh = new_state(model, len(refill), capacity)
                    first = fill(fresh, [rows[slot[r]] for r in refill])
                    for j, r in enumerate(refill):
                        splice(state, r, fresh, j)
                        logits[r] = first[j]
                        alive[r] = True
                if not any(alive):
                    break
    finally:
        model.train(was_training)
    calls = tuple(state.stage_calls)
    truncated = tuple(row.dropped for row in rows)
    return Decoded([bytes(p) for p in produced], kept, calls[-1], calls, truncated, kept_levels)


#: Positions per prefill walk by default on a CPU, where chunks of it measure faster than whole
#: prompts and hold less memory (``python -m benchmarks prefill``).
CPU_PREFILL_CHUNK = 256


def default_prefill_chunk(model: Any) -> int:
    """Positions per prefill walk when none is asked for: ``CPU_PREFILL_CHUNK`` on a CPU for a
    model whose prompts can be prefilled in chunks; 0 (whole prompts) for one that cannot (a
    routed level) and on a GPU, until the GPU check has measured chunks there."""
    if chunk_refusal(model) is not None or next(model.parameters()).device.type != "cpu":
        return 0
    return CPU_PREFILL_CHUNK


def check_prefill_chunk(model: Any, chunk: int | None) -> None:
    """ValueError naming what is wrong with a prefill chunk for ``model`` (0: whole prompts, None:
    the default)."""
    if chunk is None or chunk == 0:
        return
    if chunk < 0:
        raise ValueError(f"prefill_chunk must be >= 1 position, or 0 for whole prompts, got {chunk}")
    reason = chunk_refusal(model)
    if reason is not None:
        raise ValueError(f"this model's prompts cannot be prefilled in chunks: {reason}; give 0 (whole prompts)")


def _prompt_batch(spec: Any, rows: Sequence[Any], device: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded (B, P) tokens and levels of prompts (BOS first) and their (B,) lengths."""
    width = max(len(row.ids) for row in rows) + 1
    tokens = torch.full((len(rows), width), PAD, dtype=torch.long)
    levels = torch.zeros((len(rows), width), dtype=torch.uint8)
    tokens[:, 0] = BOS
    levels[:, 0] = spec.depth
    for r, row in enumerate(rows):
        tokens[r, 1 : len(row.ids) + 1] = torch.from_numpy(row.ids)
        levels[r, 1 : len(row.ids) + 1] = torch.from_numpy(row.levels)
    lengths = torch.tensor([len(row.ids) + 1 for row in rows], device=device)
    return tokens.to(device), levels.to(device), lengths


LEVEL_SOURCES = tuple(source.value for source in LevelSource)


def default_step_mode(device: torch.device) -> StepMode:
    """The step mode that measures fastest on ``device`` (``python -m benchmarks generate``):
    eager on CPU, where it computes only the rows and cache slots each level needs; eager on
    CUDA too until the GPU check has measured graph-captured steps there."""
    return StepMode.EAGER


def check_step_mode(mode: StepMode | str | None, device: torch.device) -> StepMode:
    """The step mode named (None: the device's default); a clear error for an unknown name."""
    if mode is None:
        return default_step_mode(device)
    try:
        return StepMode(mode)
    except ValueError:
        raise ValueError(f"step_mode must be one of {', '.join(STEP_MODES)}, got {mode!r}") from None


def check_levels_source(model: Any, levels: LevelSource | str) -> LevelSource:
    """The level source named; a clear error for a model without a level head or an unknown name."""
    try:
        levels = LevelSource(levels)
    except ValueError:
        raise ValueError(f"levels must be one of {', '.join(LEVEL_SOURCES)}, got {levels!r}") from None
    if levels is LevelSource.PREDICTED and getattr(model, "level_head", None) is None:
        raise InputError(
            "levels = 'predicted' needs a model trained with a level head (model.level_loss > 0 in "
            "its spec); this one has none: use the splitters (--levels splitter)"
        )
    return levels


def _generator(model: Any, seed: int) -> torch.Generator:
    """A sampling generator on the model's device (CUDA sampling needs a CUDA generator)."""
    return torch.Generator(device=next(model.parameters()).device).manual_seed(seed)


def _check(prompts: Any, top_k: int | None, top_p: float | None) -> None:
    if isinstance(prompts, (bytes, bytearray)):
        raise TypeError("prompts must be a list of bytes objects, one per row (got a single bytes object)")
    for name, value in (("top_k", top_k), ("top_p", top_p)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def generate(
    model: Any,
    prompts: Sequence[bytes],
    max_new_bytes: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: bytes | Sequence[bytes] | None = None,
    on_bytes: Callable[[int, bytes], None] | None = None,
    threads: int | None = None,
    levels: LevelSource | str = LevelSource.SPLITTER,
    encoding: Encoding | None = None,
    step_mode: StepMode | str | None = None,
    batch_size: int | None = None,
    prefill_chunk: int | None = None,
) -> list[bytes]:
    """The new bytes of each prompt (raw bytes; EOS ends a row and is not included).

    Args:
        model: an ``AUNet`` (``aunet.build_model``, or ``aunet.load_run(DIR).model``).
        prompts: one bytes object per row, of any lengths (an empty prompt starts from BOS).
            A prompt longer than the model's context keeps its last context - 1 bytes (with a
            RuntimeWarning saying how many were dropped).
        max_new_bytes: at most this many new bytes per row.
        temperature: 0 is greedy; otherwise logits are divided by it before sampling.
        top_k: keep the k most likely tokens (None: all).
        top_p: keep the smallest set of tokens with probability p (None: all).
        seed: the sampling generator's seed (the generator lives on the model's device).
        stop: a byte string (or several) that ends a row once produced (it is kept).
        on_bytes: called with (row, byte) as each byte is produced (streaming output).
        threads: torch threads for the decoding steps, restored afterwards (None: leave the
            process's setting; ``aunet generate`` uses one thread for a few rows on a CPU).
        levels: ``splitter`` (the spec's splitters decide each new byte's level) or
            ``predicted`` (the model's level head does; needs ``model.level_loss`` > 0).
        encoding: how the model reads (``load_run(DIR).encoding``); by default its spec's
            splitters, which is every byte model's. A BPE baseline needs its run's tokenizer.
        step_mode: how decoding steps run, ``eager``, ``static`` or ``compiled``
            (``aunet.core.decoding.StepMode``; None: what measures fastest on the model's
            device). All give the same bytes up to float rounding.
        batch_size: rows decoded at once (None: all prompts); a row that finishes takes the next
            waiting prompt, so the batch stays full (continuous batching). ``on_bytes`` gets
            the prompt's index.
        prefill_chunk: prefill prompts in walks of this many positions: a long prompt's
            attention masks and activations are the chunk's against the cache, not the prompt's
            against itself; the same logits to float rounding. 0: whole prompts; None: the
            default (256 on a CPU, where it measures faster; whole on a GPU, and for models with
            a routed level, which cannot take chunks: a chunk for one is a ValueError).
    """
    _check(prompts, top_k, top_p)
    stops = [stop] if isinstance(stop, (bytes, bytearray)) else list(stop or [])
    generator = _generator(model, seed)

    def choose(logits: Tensor) -> Tensor:
        return sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)

    return decode(
        model,
        [bytes(p) for p in prompts],
        max_new_bytes,
        choose=choose,
        stop=stops,
        on_bytes=on_bytes,
        threads=threads,
        levels=levels,
        encoding=encoding,
        step_mode=step_mode,
        batch_size=batch_size,
        prefill_chunk=prefill_chunk,
    ).new_bytes


def generate_recompute(
    model: Any,
    prompts: Sequence[bytes],
    max_new_bytes: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: bytes | None = None,
) -> list[bytes]:
    """New bytes per prompt, running the full forward over the whole sequence for each byte."""
    from aunet.core.model import ShapeMode, compute_levels, encode

    _check(prompts, top_k, top_p)
    spec = model.spec
    generator = _generator(model, seed)
    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    try:
        for prompt in prompts:
            produced = bytearray()
            for _ in range(max_new_bytes):
                data = bytes(prompt) + bytes(produced)
                data = data[-(spec.model.context - 1) :]
                tokens = encode(data).to(device)
                levels = compute_levels(spec, data).to(device)
                with torch.no_grad():
                    logits = model(tokens[None], levels[None], shapes=ShapeMode.EAGER, doc_mask=False).logits[:, -1]
                nxt = int(sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator))
                if nxt == EOS:
                    break
                produced.append(nxt)
                if stop and produced.endswith(stop):
                    break
            out.append(bytes(produced))
    finally:
        model.train(was_training)
    return out


#: ``aunet generate --prompts`` reads files up to this size (prompts are held in memory).
MAX_PROMPTS_FILE = 64 << 20


def read_prompts(path: str) -> list[bytes]:
    """The prompts of a ``--prompts`` file: one per line (blank lines skipped, line ends removed),
    or, for ``.jsonl``, one JSON string or object with a ``"prompt"`` (or ``"text"``) field per
    line. Any problem is one line naming the file and line."""
    p, size = input_file(path, what="--prompts")
    if size > MAX_PROMPTS_FILE:
        raise InputError(f"--prompts: '{path}' is {size:,} bytes; prompts files may be at most {MAX_PROMPTS_FILE:,}")
    prompts = []
    for number, line in enumerate(p.read_bytes().split(b"\n"), start=1):
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        if p.suffix.lower() != ".jsonl":
            prompts.append(line)
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"--prompts: {path}, line {number}: not a JSON value ({exc})") from None
        except RecursionError:
            raise InputError(f"--prompts: {path}, line {number}: JSON nested too deeply to read") from None
        if isinstance(record, dict):
            record = record.get("prompt", record.get("text"))
        if not isinstance(record, str):
            raise InputError(
                f'--prompts: {path}, line {number}: expected a string or an object with a "prompt" '
                '(or "text") string field'
            )
        prompts.append(record.encode("utf-8", "surrogatepass"))
    if not prompts:
        raise InputError(f"--prompts: '{path}' holds no prompts (every line is blank)")
    return prompts
