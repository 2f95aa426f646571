"""Scoring rows for the lm-evaluation-harness adapter, with aunet's own machinery and no lm_eval.

The model reads bytes, so every request is UTF-8 encoded and scored byte by byte:

- ``loglikelihood`` (context, continuation): ``score_continuations``; one row per request, BOS +
  context + continuation, cut from the left to the model's context; the sum of the continuation
  bytes' log-probabilities (nats), and whether each of them is the greedy choice among bytes and
  EOS (as ``sample_next`` chooses: BOS and PAD never are). Rows are batched, longest first,
  right-padded with PAD (attention is causal, so padding changes nothing before it).
- ``loglikelihood_rolling`` (text): ``score_documents``; the text as one document, cut into the
  windows of ``aunet eval`` (``evaluation_rows``: consecutive windows of ``context`` positions,
  each byte predicted once from its own window); the EOS that ``aunet eval`` also scores is left
  out, since the harness's perplexity tasks score the text only.
- ``generate_until``'s text is cut before its first stop string (``cut_at_stop``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from aunet.core.encoding import Encoding, Pair, splitter_encoding


@attrs.frozen
class Scored:
    """One continuation's score."""

    logprob: float  # nats, summed over the scored bytes
    greedy: bool  # every scored byte is the argmax among bytes and EOS
    dropped: int  # bytes cut from the left of context + continuation
    continuation_dropped: int  # of those, bytes of the continuation itself (it did not fit alone)


def _row_batch(pairs: Sequence[Pair]) -> Any:
    """(B, T) tokens, levels and targets of context-continuation rows, right-padded with PAD
    (level 0, IGNORE targets); only each row's continuation has targets."""
    from aunet.core.tokens import IGNORE, PAD
    from aunet.jobs.data.packing import Batch

    width = max(len(p.encoded) - 1 for p in pairs)
    tokens = np.full((len(pairs), width), PAD, dtype=np.int64)  # (B, T)
    levels = np.zeros((len(pairs), width), dtype=np.uint8)  # (B, T)
    targets = np.full((len(pairs), width), IGNORE, dtype=np.int64)  # (B, T)
    for r, pair in enumerate(pairs):
        e = pair.encoded  # (n + 1,) BOS + the row's ids
        n = len(e) - 1
        ids = e.tokens
        tokens[r, :n] = ids[:-1]
        levels[r, :n] = e.levels[:-1]
        targets[r, n - pair.scored : n] = ids[n - pair.scored + 1 :]
    return Batch(tokens, levels, targets)


def _trim(batch: Any) -> Any:
    """The batch without its trailing columns that predict nothing in any row (causal attention:
    dropping them changes nothing before them)."""
    from aunet.core.tokens import IGNORE
    from aunet.jobs.data.packing import Batch

    used = np.nonzero((batch.targets != IGNORE).any(0))[0]
    width = int(used[-1]) + 1 if len(used) else 1
    return Batch(batch.tokens[:, :width], batch.levels[:, :width], batch.targets[:, :width])


def _forward_scores(model: Any, batch: Any) -> tuple[list[float], list[bool]]:
    """Per row: the summed log-probability (nats) of its targets, and whether every target is
    the greedy choice (``sample_next`` at temperature 0: BOS and PAD excluded)."""
    import torch

    from aunet.core.tokens import IGNORE
    from aunet.jobs.inference.generate import sample_next
    from aunet.jobs.runtime.devices import model_autocast

    device = next(model.parameters()).device
    tokens, levels, targets = batch.tensors(device)  # (B, T) each
    with torch.no_grad(), model_autocast(model):
        out = model(tokens, levels, capacity=batch.capacity(model.depth), doc_mask=False)
    logits = out.logits.float()  # (B, T, V)
    scored = targets != IGNORE  # (B, T)
    picked = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T)
    logprob = (picked.double() * scored).sum(1)  # (B,)
    flat = logits.view(-1, logits.shape[-1])  # (B * T, V)
    greedy = sample_next(flat, temperature=0.0, top_k=None, top_p=None, generator=None).view(targets.shape)  # (B, T)
    is_greedy = ((greedy == targets) | ~scored).all(1)  # (B,)
    return logprob.tolist(), is_greedy.tolist()


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def score_continuations(
    model: Any,
    pairs: Sequence[tuple[bytes, bytes]],
    *,
    limit: int,
    batch_size: int = 8,
    encoding: Encoding | None = None,
) -> list[Scored]:
    """The log-probability of each continuation after its context (``loglikelihood``), in the
    order given; rows of at most ``limit`` positions after BOS, batched longest first.
    ``encoding``: how the model reads (default: its spec's splitters)."""
    encoding = encoding if encoding is not None else splitter_encoding(model.spec)
    rows = [encoding.pair(c, x, limit) for c, x in pairs]
    out: list[Scored | None] = [None] * len(rows)
    todo = [i for i, r in enumerate(rows) if r.scored > 0]
    for i, r in enumerate(rows):
        if r.scored == 0:  # nothing to score: log 1, trivially greedy
            out[i] = Scored(0.0, True, r.dropped, r.continuation_dropped)
    order = sorted(todo, key=lambda i: -len(rows[i].encoded))
    was_training = model.training
    model.eval()
    try:
        for chunk in _chunks(order, batch_size):
            logprob, greedy = _forward_scores(model, _row_batch([rows[i] for i in chunk]))
            for i, lp, g in zip(chunk, logprob, greedy):
                out[i] = Scored(lp, g, rows[i].dropped, rows[i].continuation_dropped)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def score_documents(
    model: Any, texts: Sequence[bytes], *, context: int, batch_size: int = 8, encoding: Encoding | None = None
) -> list[float]:
    """The log-likelihood (nats) of each text's bytes as a document, BOS first, in the windows of
    ``aunet eval`` (``evaluation_rows``), the EOS not scored (``loglikelihood_rolling``). Windows
    of every document are batched together."""
    from aunet.jobs.data.packing import evaluation_rows
    from aunet.jobs.inference.evaluate import _join

    encoding = encoding if encoding is not None else splitter_encoding(model.spec)
    windows = [
        (d, row) for d, text in enumerate(texts) for row in evaluation_rows([encoding.encode(text, eos=False)], context)
    ]
    totals = [0.0] * len(texts)
    was_training = model.training
    model.eval()
    try:
        for chunk in _chunks(range(len(windows)), batch_size):
            batch = _trim(_join([windows[w][1] for w in chunk]))
            logprob, _ = _forward_scores(model, batch)
            for w, lp in zip(chunk, logprob):
                totals[windows[w][0]] += lp
    finally:
        model.train(was_training)
    return totals


def cut_at_stop(data: bytes, stops: Sequence[bytes]) -> bytes:
    """``data`` before the earliest occurrence of any stop string (the harness scores that)."""
    cut = min((i for i in (data.find(s) for s in stops if s) if i >= 0), default=len(data))
    return data[:cut]
