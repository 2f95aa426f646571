"""The entropy splitter's model (``aunet.splitters.entropy``): a flat byte model read from a
verified checkpoint once per process, frozen, in float64 on the CPU, and the entropies of its
next-token distributions over a document, in batch (whole windows at once) and streaming (a byte
at a time through its KV cache) form.

A document is read in windows of W = context - 1 bytes, each after a BOS of its own (the module
docstring of ``aunet.splitters.entropy`` says why). Entropies are in bits, over the model's 259 ids.

Dimension alphabet: N windows, W bytes per window, T bytes, V vocabulary.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aunet.core import checkpoints, decoding
from aunet.core.convert import parse_spec
from aunet.core.model import AUNet, build_model
from aunet.core.tokens import BOS, PAD

#: The entropy model's precision: the batch and streaming forms agree to about 1e-15 bits in it.
DTYPE = torch.float64
#: Bytes of windows run through the model in one forward of the batch form: 8 windows of
#: entropy-tiny, whose activations stay in a core's cache (133 kB/s on this project's 2-vCPU
#: machine, against 67 kB/s at 64 windows).
FORWARD_BYTES = 1 << 11


def bits(logits: Tensor) -> Tensor:
    """(..., V) logits -> (...) float64 entropy of their softmax, in bits."""
    logp = torch.log_softmax(logits.to(DTYPE), dim=-1)
    return -(logp.exp() * logp).sum(-1) / math.log(2)


class EntropyModel:
    """A flat byte model that gives the entropy of its next-token distribution after every byte."""

    def __init__(self, model: AUNet) -> None:
        self.model = model
        self.window = model.spec.model.context - 1  # W: bytes read after each window's BOS
        with torch.no_grad():
            bos = torch.tensor([[BOS]])
            self.first = float(bits(model(bos, torch.zeros_like(bos), doc_mask=False).logits[0, 0]))  # e_-1

    @torch.no_grad()
    def entropies(self, data: np.ndarray) -> np.ndarray:
        """(T + 1,) float64: e_-1 (after BOS alone), then the entropy after each of the (T,) bytes.
        Whole windows at once: a forward reads up to ``FORWARD_BYTES`` of them."""
        w = self.window
        out = np.empty(len(data) + 1, dtype=np.float64)
        out[0] = self.first
        per_forward = max(1, FORWARD_BYTES // w)
        body = torch.from_numpy(np.asarray(data, dtype=np.int64))  # (T,)
        for start in range(0, len(data), per_forward * w):
            chunk = body[start : start + per_forward * w]
            n = -(-len(chunk) // w)  # N windows, the last maybe partial
            windows = torch.full((n * w,), PAD, dtype=torch.long)
            windows[: len(chunk)] = chunk
            bos = torch.full((n, 1), BOS, dtype=torch.long)
            tokens = torch.cat([bos, windows.view(n, w)], dim=1)  # (N, W + 1): BOS, then a window's bytes
            logits = self.model(tokens, torch.zeros_like(tokens), doc_mask=False).logits  # (N, W + 1, V)
            after = bits(logits[:, 1:]).reshape(-1)[: len(chunk)]  # (N * W,) after each byte
            out[1 + start : 1 + start + len(chunk)] = after.numpy()
        return out

    def reader(self) -> EntropyReader:
        """The streaming form over a new document."""
        return EntropyReader(self)


class EntropyReader:
    """A document a byte (or a chunk) at a time through the model's KV cache: the entropy after
    each byte the moment it arrives, O(1) work per byte; a fresh cache for every window."""

    def __init__(self, model: EntropyModel) -> None:
        self.model = model
        self.state: decoding.DecodeState | None = None
        self.read = model.window  # bytes of the current window read: none open yet

    def _open(self, tokens: list[int]) -> Tensor:
        """A fresh window that holds BOS and ``tokens`` (bytes): (len(tokens) + 1, V) logits."""
        m = self.model.model
        self.state = decoding.new_state(m, 1, self.model.window + 1)
        row = torch.tensor([[BOS, *tokens]])  # (1, P)
        lengths = torch.tensor([row.shape[1]])
        logits = decoding.prefill(m, self.state, row, torch.zeros_like(row), lengths, every_position=True)
        self.read = len(tokens)
        return logits[0]  # (P, V)

    @torch.no_grad()
    def push(self, byte: int) -> float:
        """The entropy after ``byte``, read after everything pushed so far."""
        if self.read == self.model.window:
            return float(bits(self._open([byte])[-1]))
        logits = decoding.step(self.model.model, self.state, torch.tensor([byte]), [0], [True])  # (1, V)
        self.read += 1
        return float(bits(logits[0]))

    @torch.no_grad()
    def feed(self, chunk: bytes) -> np.ndarray:
        """(N,) the entropies after each byte of ``chunk``: a window's bytes at once where the
        chunk opens it, else a byte at a time (at most W - 1 of them per chunk)."""
        w = self.model.window
        out = np.empty(len(chunk), dtype=np.float64)
        i = 0
        while i < len(chunk):
            if self.read == w:  # a window opens here: its bytes in this chunk through one forward
                piece = list(chunk[i : i + w])
                out[i : i + len(piece)] = bits(self._open(piece)[1:]).numpy()
                i += len(piece)
            else:
                out[i] = self.push(chunk[i])
                i += 1
        return out


@functools.lru_cache(maxsize=8)
def load(path: str, sha256: str) -> EntropyModel:
    """The model of checkpoint ``path`` whose weights have SHA-256 ``sha256``, verified and read
    without unpickling (``aunet.core.checkpoints``); once per process."""
    folder = Path(path)
    meta = checkpoints.verify(folder, (checkpoints.MODEL_FILE,))
    if meta["files"][checkpoints.MODEL_FILE]["sha256"] != sha256:
        raise checkpoints.CheckpointError(f"checkpoint {folder} changed while it was read; read it again")
    weights = checkpoints.read_tensors(folder, checkpoints.MODEL_FILE)
    spec = parse_spec(meta["spec"], source=f"{folder}/meta.json", ignore=("train",))
    with torch.random.fork_rng(devices=[]):  # building initializes weights: leave the caller's RNG be
        model = build_model(spec)
    checkpoints.load_weights(model, weights, folder)
    model.to(DTYPE).eval().requires_grad_(False)
    return EntropyModel(model)


__all__ = ["DTYPE", "EntropyModel", "EntropyReader", "bits", "load"]
