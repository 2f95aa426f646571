"""Upsampler modules for the built-in ``multi-linear``, ``repeat`` and ``simple`` kinds (specs and
the rules they implement: ``aunet.plugins.upsamplers``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aunet.core.init import Init, init_matrix
from aunet.core.modules import Upsampler, gather_rows


class MultiLinearUpsampler(Upsampler):
    """out_j = (W_up + W_o) RMSNorm(coarse[segment_j]) with o the (wrapped or clamped) offset."""

    def __init__(
        self,
        *,
        dim_coarse: int,
        dim_fine: int,
        offsets: int,
        wrap: bool,
        norm_eps: float,
        init_std: float,
        init: Init | None = None,
    ) -> None:
        super().__init__()
        self.offsets = offsets
        self.wrap = wrap
        self.dim_fine = dim_fine
        self.norm = nn.RMSNorm(dim_coarse, eps=norm_eps)
        self.up = nn.Parameter(torch.empty(dim_coarse, dim_fine))  # W_up
        self.per_offset = nn.Parameter(torch.empty(offsets, dim_coarse, dim_fine))  # W_o
        init_matrix(self.up, init, std=init_std, fan_in=dim_coarse)
        init_matrix(self.per_offset, init, std=init_std, fan_in=dim_coarse)
        self._combined: tuple[tuple[Any, ...], Tensor] | None = None  # (weights' versions, all W_up + W_o)

    def forward(self, coarse: Tensor, segment: Tensor, offset: Tensor) -> Tensor:
        """Every coarse vector is projected once through all (W_up + W_o), and each fine position
        gathers its row: memory linear in B x S x D (a decoding step has S = 1), never a matrix
        per position (a (B, T, Dc, Df) weight would be 3.6 GB for 64 rows at the paper's widths)."""
        b, s, _ = coarse.shape
        n = self.offsets
        projected = (self.norm(coarse) @ self.combined()).view(b, s * n, self.dim_fine)  # (B, S*n, Df): row s*n + o
        return gather_rows(projected, segment * n + self._offset_row(offset))  # (B, T, Df)

    def prepare(self, coarse: Tensor) -> Tensor:
        """(B, 1, n, Df): the row's coarse vector through every (W_up + W_o), one matrix product
        per coarse position instead of one per fine position."""
        b = coarse.shape[0]
        return (self.norm(coarse[:, 0]) @ self.combined()).view(b, 1, self.offsets, self.dim_fine)

    def pick(self, prepared: Tensor, offset: Tensor) -> Tensor:
        o = self._offset_row(offset)  # (B, T)
        return prepared[:, 0].gather(1, o[..., None].expand(-1, -1, self.dim_fine))  # (B, T, Df)

    def _offset_row(self, offset: Tensor) -> Tensor:
        """Which of the n matrices each offset uses: wrapped, or clamped at the last."""
        return offset.remainder(self.offsets) if self.wrap else offset.clamp(max=self.offsets - 1)

    def combined(self) -> Tensor:
        """(Dc, n x Df): every (W_up + W_o) side by side. Made once and kept while no gradient is
        recorded and the weights are unchanged (their version counters and storage say so): a
        decoding step or an evaluation would otherwise rebuild it (n x Dc x Df floats) every call."""
        n = self.offsets

        def build() -> Tensor:
            return (self.up[None] + self.per_offset).permute(1, 0, 2).reshape(-1, n * self.dim_fine)

        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return build()
        key = tuple((w._version, w.data_ptr(), w.device, w.dtype) for w in (self.up, self.per_offset))
        if self._combined is None or self._combined[0] != key:
            self._combined = (key, build())
        return self._combined[1]


class RepeatUpsampler(Upsampler):
    """out_j = W_up RMSNorm(coarse[segment_j]) (+ E[o_j] with an offset embedding), at every
    position or only at the boundary."""

    def __init__(
        self,
        *,
        dim_coarse: int,
        dim_fine: int,
        only_boundary: bool,
        norm_eps: float,
        init_std: float,
        init: Init | None = None,
        offsets: int = 0,
        wrap: bool = True,
    ) -> None:
        super().__init__()
        self.only_boundary = only_boundary
        self.norm = nn.RMSNorm(dim_coarse, eps=norm_eps)
        self.proj = nn.Linear(dim_coarse, dim_fine, bias=False)
        init_matrix(self.proj.weight, init, std=init_std, fan_in=dim_coarse)
        self.offsets = offsets
        self.wrap = wrap
        if offsets:
            self.offset_embedding = nn.Embedding(offsets, dim_fine)  # E, one row per offset
            init_matrix(self.offset_embedding.weight, init, std=init_std, fan_in=dim_fine)

    def forward(self, coarse: Tensor, segment: Tensor, offset: Tensor) -> Tensor:
        out = gather_rows(self.proj(self.norm(coarse)), segment)  # (B, T, Df)
        return self._per_offset(out, offset)

    def prepare(self, coarse: Tensor) -> Tensor:
        """(B, 1, Df): the row's coarse vector projected, once per coarse position."""
        return self.proj(self.norm(coarse))

    def pick(self, prepared: Tensor, offset: Tensor) -> Tensor:
        return self._per_offset(prepared.expand(-1, offset.shape[1], -1), offset)

    def _per_offset(self, out: Tensor, offset: Tensor) -> Tensor:
        """The projected vectors (B, T, Df) with what each position's offset adds or masks."""
        if self.offsets:
            n = self.offsets
            out = out + self.offset_embedding(offset.remainder(n) if self.wrap else offset.clamp(max=n - 1))
        if self.only_boundary:
            out = out * (offset == 0).unsqueeze(-1).to(out.dtype)
        return out
