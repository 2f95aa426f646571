"""Hash n-gram byte embeddings: BLT's (Pagnoni et al. 2024, arXiv 2412.09871, section 3.2.1; see
docs/method.md section 11).

For every n in the spec's sizes, the n ids ending at position t (t itself last) are hashed with a
rolling polynomial hash, and the hash modulo the table's rows picks a row of that n's table. The
model adds those rows to the byte's own embedding and divides by ``len(sizes) + 1``
(``AUNet.embed_tokens``). The hash, over the ids as they are (bytes, BOS, EOS, PAD)::

    hash(x_{t-n+1}, ..., x_t) = sum_{j < n} x_{t-j} * BASE^j  mod MODULUS

which is Horner's ``h = h * BASE + x`` from the oldest id to the newest. Every product stays below
2^63 (ids below 2^20 times powers below 2^31), so it is exact integer arithmetic: the same on every
device, the same for a whole row at once (``forward``) and one id at a time (decoding, which
carries each row's last ``lookback`` ids), and the same as ``ngram_hash``, the plain-Python oracle.

An n-gram that would reach before the row's first position or across a document start (a BOS at
any of its positions but the first) adds nothing: a position's embedding depends only on its own
document, whatever a packer put before it and whether or not attention is kept within
documents. No host synchronisation, no shape that depends on the data.

Dimension alphabet: B batch, S new positions, W the window (the carried ids and the new ones),
D width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from aunet.core.tokens import BOS

#: The hash's modulus: the Mersenne prime 2^31 - 1, far above any table's rows (2^24 at most).
MODULUS = (1 << 31) - 1
#: The hash's base: a prime above every id, so ids are digits of a number in base BASE.
BASE = 1_000_003
#: Marks a carried id from before the row's first position (``NgramEmbedding.recent``).
ABSENT = -1


def ngram_hash(ids: Sequence[int]) -> int:
    """The hash of one n-gram, oldest id first: the plain-Python reference of ``NgramEmbedding``."""
    h = 0
    for x in ids:
        h = (h * BASE + x) % MODULUS
    return h


class NgramEmbedding(nn.Module):
    """One table of ``buckets`` rows of width ``dim`` per n-gram length in ``sizes``; ``forward``
    gives the sum of the rows the n-grams ending at each position pick (the byte's own embedding
    and the division are the model's)."""

    def __init__(self, *, sizes: Sequence[int], buckets: int, dim: int) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        self.buckets = buckets
        self.lookback = max(self.sizes) - 1  # ids before a position its longest n-gram reads
        self.tables = nn.ModuleDict({str(n): nn.Embedding(buckets, dim) for n in self.sizes})
        self.powers = [pow(BASE, j, MODULUS) for j in range(max(self.sizes))]  # BASE^j mod MODULUS

    def forward(self, tokens: Tensor, before: Tensor | None = None) -> Tensor:
        """(B, S) ids -> (B, S, D): the n-gram rows summed at each position.

        ``before`` (B, ``lookback``) holds the ids that precede ``tokens`` in each row, oldest
        first, ``ABSENT`` where the row has none (decoding); None: ``tokens`` start their rows.
        """
        s = tokens.shape[1]
        window = tokens.long() if before is None else torch.cat([before.long(), tokens.long()], dim=1)  # (B, W)
        w = window.shape[1]
        docs = (window == BOS).long().cumsum(1)  # (B, W): document starts at or before each position
        pad = self.lookback
        ids = nn.functional.pad(window, (pad, 0), value=ABSENT)  # (B, pad + W)
        docs = nn.functional.pad(docs, (pad, 0), value=ABSENT)  # (B, pad + W)
        now = docs[:, pad + w - s :]  # (B, S)
        h = torch.zeros_like(tokens, dtype=torch.long)  # (B, S) hash of the j + 1 ids ending at t
        out = None
        for j in range(max(self.sizes)):
            oldest = ids[:, pad + w - s - j : pad + w - j]  # (B, S): the id j positions back
            h = (h + oldest.clamp(min=0) * self.powers[j]) % MODULUS
            n = j + 1
            if n not in self.sizes:
                continue
            # Within the row (absent ids only ever precede present ones) and no BOS after the oldest id.
            keep = (oldest != ABSENT) & (docs[:, pad + w - s - j : pad + w - j] == now)  # (B, S)
            rows = self.tables[str(n)](h % self.buckets)  # (B, S, D)
            rows = torch.where(keep[..., None], rows, 0.0)
            out = rows if out is None else out + rows
        return out

    def recent(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """(B, ``lookback``) the last ids of right-padded rows (B, P) of ``lengths`` (B,) ids,
        oldest first, ``ABSENT`` before each row's start: what ``forward`` takes as ``before``."""
        back = torch.arange(-self.lookback, 0, device=tokens.device)  # (lookback,)
        positions = lengths[:, None] + back  # (B, lookback)
        ids = torch.gather(tokens.long(), 1, positions.clamp(min=0))
        return torch.where(positions >= 0, ids, ABSENT)

    def push(self, recent: Tensor, token: Tensor, active: Tensor) -> Tensor:
        """``recent`` (B, ``lookback``) after one more id per row, (B,) ``token``, in the rows
        ``active`` (B,) bool; the other rows keep theirs."""
        shifted = torch.cat([recent[:, 1:], token.long()[:, None]], dim=1)  # (B, lookback)
        return torch.where(active[:, None], shifted, recent)
