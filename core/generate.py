"""Sampling bytes from a model.

``generate`` decodes with per-stage KV caches (``aunet.core.decoding``): the deep stages run only
at boundaries. ``sample_next`` turns logits into a byte (temperature, top-k, top-p; temperature 0
is greedy). ``generate_recompute`` re-runs the whole forward for every new byte: simple, obviously
correct, quadratic; the benchmark's baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from aunet.core.tokens import BOS, EOS


def sample_next(logits: Tensor, *, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> Tensor:  # fmt: skip
    """(B, V) logits -> (B,) token ids among bytes and EOS (BOS and PAD are never sampled)."""
    logits = logits.float().clone()
    logits[:, BOS] = float("-inf")
    logits[:, EOS + 1 :] = float("-inf")
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
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


def generate(model, prompts: Sequence[bytes], max_new_bytes: int, *, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             stop: bytes | Sequence[bytes] | None = None,
             on_bytes: Callable[[int, bytes], None] | None = None) -> list[bytes]:  # fmt: skip
    """The new bytes of each prompt (raw bytes; EOS ends a row and is not included).

    Args:
        prompts: one bytes object per row, of any lengths (an empty prompt starts from BOS).
            A prompt longer than the model's context keeps its last context - 1 bytes (with a
            RuntimeWarning saying how many were dropped).
        max_new_bytes: at most this many new bytes per row.
        temperature: 0 is greedy; otherwise logits are divided by it before sampling.
        top_k, top_p: keep the k most likely tokens / the smallest set with probability p.
        seed: the sampling generator's seed.
        stop: a byte string (or several) that ends a row once produced (it is kept).
        on_bytes: called with (row, byte) as each byte is produced (streaming output).
    """
    from aunet.core.decoding import decode

    if isinstance(prompts, (bytes, bytearray)):
        raise TypeError("prompts must be a list of bytes objects, one per row (got a single bytes object)")
    for name, value in (("top_k", top_k), ("top_p", top_p)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    stops = [stop] if isinstance(stop, (bytes, bytearray)) else list(stop or [])
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)

    def choose(logits: Tensor) -> Tensor:
        return sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)

    return decode(model, [bytes(p) for p in prompts], max_new_bytes, choose=choose, stop=stops,
                  on_bytes=on_bytes).new_bytes  # fmt: skip


def generate_recompute(model, prompts: Sequence[bytes], max_new_bytes: int, *, temperature: float = 0.0,
                       top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                       stop: bytes | None = None) -> list[bytes]:  # fmt: skip
    """New bytes per prompt, running the full forward over the whole sequence for each byte."""
    from aunet.core.model import ShapeMode, compute_levels, encode

    spec = model.spec
    generator = torch.Generator().manual_seed(seed)
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
                    logits = model(tokens[None], levels[None], shapes=ShapeMode.EAGER).logits[:, -1]
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
