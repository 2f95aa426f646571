"""Deliberately broken components, one family at a time: what each conformance kit must catch.

Used by ``tests/test_kits.py`` (each kit rejects each mutant, naming the invariant) and by
``catch_counts`` below, which runs every kit on its mutants in fresh, randomized hypothesis runs
(no example database, default example counts): what a plugin author's own test run would do.
``python tests/mutants.py N [--no-shrink]`` prints the counts as JSON.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from aunet.core import TABLE_SIZE, Chars, CharTable, Splitter
from aunet.core.components import AttentionSpec, PoolerSpec, RouterSpec, StageSpec, UpsamplerSpec
from aunet.core.modules import AttentionBackend, Layout, LevelIndex, Pooler, Routing, Stage, Upsampler, gather_rows
from aunet.core.writers import MetricRun, MetricWriter, MetricWriterSpec
from aunet.plugins.nn.attention import SdpaBackend
from aunet.plugins.nn.routers import DynamicRouter

# -- poolers -------------------------------------------------------------------------------------


class PeekPooler(Pooler):
    """Pools the position after the boundary: it sees the next segment."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=False)

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        return self.proj(gather_rows(x, (level.index + 1).clamp(max=x.shape[1] - 1)))


class MixingPooler(PeekPooler):
    """Adds the mean over the batch's rows: rows mix."""

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        picked = gather_rows(x, level.index)
        return self.proj(picked + picked.mean(dim=0, keepdim=True))


@attrs.frozen
class BrokenPoolerSpec(PoolerSpec):
    kind: ClassVar[str] = "broken-pooler"
    module: type = PeekPooler

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        return self.module(dim_in, dim_out)

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return dim_in * dim_out


# -- upsamplers ----------------------------------------------------------------------------------


class NextUpsampler(Upsampler):
    """Hands position j the next boundary's vector."""

    def __init__(self, dim_coarse: int, dim_fine: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_coarse, dim_fine, bias=False)

    def forward(self, coarse: Tensor, segment: Tensor, offset: Tensor) -> Tensor:
        return gather_rows(self.proj(coarse), (segment + 1).clamp(max=coarse.shape[1] - 1))


class StalePickUpsampler(Upsampler):
    """Right in ``forward`` (a projection plus an offset embedding), but what it picks from what it
    prepared ignores the offset: a decoding step would repeat the boundary's vector."""

    def __init__(self, dim_coarse: int, dim_fine: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_coarse, dim_fine, bias=False)
        self.offset = nn.Embedding(4, dim_fine)

    def forward(self, coarse: Tensor, segment: Tensor, offset: Tensor) -> Tensor:
        return gather_rows(self.proj(coarse), segment) + self.offset(offset.clamp(max=3))

    def prepare(self, coarse: Tensor) -> Tensor:
        return self.proj(coarse)  # (B, 1, Df)

    def pick(self, prepared: Tensor, offset: Tensor) -> Tensor:
        return prepared.expand(-1, offset.shape[1], -1) + self.offset(torch.zeros_like(offset))


@attrs.frozen
class BrokenUpsamplerSpec(UpsamplerSpec):
    kind: ClassVar[str] = "broken-upsampler"
    module: type = NextUpsampler

    def build(self, *, dim_coarse: int, dim_fine: int) -> Upsampler:
        return self.module(dim_coarse, dim_fine)

    def parameter_count(self, *, dim_coarse: int, dim_fine: int) -> int:
        return sum(p.numel() for p in self.build(dim_coarse=dim_coarse, dim_fine=dim_fine).parameters())


# -- stages --------------------------------------------------------------------------------------


class AheadStage(Stage):
    """Mixes each position with the next one: it attends one step ahead."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, *, layout: Layout, cache: Any = None) -> Tensor:
        ahead = torch.cat([x[:, 1:], x[:, -1:]], dim=1)
        return x + self.proj(ahead)

    def new_cache(self, *, batch: int, capacity: int, device: Any, dtype: torch.dtype) -> Any:
        return None


@attrs.frozen
class BrokenStageSpec(StageSpec):
    kind: ClassVar[str] = "broken-stage"

    def build(self, *, dim: int, device: Any = None) -> Stage:
        return AheadStage(dim)

    def parameter_count(self, *, dim: int) -> int:
        return dim * dim

    def flops_per_position(self, *, dim: int, attended: float) -> float:
        return 6.0 * dim * dim


# -- attention backends --------------------------------------------------------------------------


class NoDocumentsBackend(SdpaBackend):
    """Ignores the document mask."""

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        return super().plan(Layout(), batch=batch, length=length, window=window, device=device)


class AheadBackend(SdpaBackend):
    """Lets each query see one key ahead."""

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        from aunet.core.modules import DensePlan

        pos = torch.arange(length, device=device)
        return DensePlan((pos[None, :] <= pos[:, None] + 1)[None, None])


@attrs.frozen
class BrokenAttentionSpec(AttentionSpec):
    kind: ClassVar[str] = "broken-attention"
    backend: type = NoDocumentsBackend

    def resolve(self, *, device: Any) -> AttentionBackend:
        return self.backend()


# -- splitters -----------------------------------------------------------------------------------

OTHER, TERMINATOR, SPACE = range(3)


@functools.cache
def terminator_classes() -> CharTable:
    table = np.full(TABLE_SIZE, OTHER, dtype=np.uint8)
    table[[ord(c) for c in ".!?"]] = TERMINATOR
    table[[ord(c) for c in " \t\n"]] = SPACE
    return CharTable("terminators", table, ("other", "terminator", "space"))


@attrs.frozen(kw_only=True)
class FirstTerminatorSplitter(Splitter):
    """Marks sentence terminators, but its two forms disagree on a run of them: the batch form
    marks the first of a run of ``.!?``, the machine every one (a bug a user met: random text
    rarely holds two terminators in a row)."""

    kind: ClassVar[str] = "broken-terminators"

    def char_table(self) -> CharTable:
        return terminator_classes()

    def marks(self, chars: Chars) -> np.ndarray:
        cls = chars.classes(terminator_classes())  # (M,)
        marks = cls == TERMINATOR
        marks[1:] &= cls[:-1] != TERMINATOR  # the first of a run only
        return marks

    def start(self) -> bool:
        return False

    def step(self, state: bool, cls: int, nbytes: int) -> tuple[bool, bool]:
        return cls == TERMINATOR, cls == TERMINATOR  # every one


# -- metric writers ------------------------------------------------------------------------------


class RowsWriter(MetricWriter):
    """Rows appended to rows.jsonl; ``forget``: a resumed run starts the file anew."""

    def __init__(self, path: Path, resume_step: int | None, *, truncate: bool = True, forget: bool = False) -> None:
        self.path, self.closed = path, False
        if resume_step is not None and path.exists() and (truncate or forget):
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            kept = [] if forget else [r for r in rows if r["step"] <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, step: int, metrics: Any) -> None:
        pass

    def write_row(self, row: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(row)) + "\n")

    def close(self) -> None:
        self.closed = True


class FragileWriter(RowsWriter):
    """Its second close fails (a handle closed twice)."""

    def close(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        self.closed = True


@attrs.frozen(kw_only=True)
class BrokenWriterSpec(MetricWriterSpec):
    """A rows writer that appends again on resume (each later step written twice), or with
    ``forget`` drops what came before the checkpoint too, or with ``fragile`` fails a second close."""

    kind: ClassVar[str] = "broken-writer"
    truncate: bool = False
    forget: bool = False
    fragile: bool = False

    def open(self, run: MetricRun) -> MetricWriter:
        cls = FragileWriter if self.fragile else RowsWriter
        return cls(run.directory / "rows.jsonl", run.resume_step, truncate=self.truncate, forget=self.forget)

    def read(self, directory: Path) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        for line in (directory / "rows.jsonl").read_text().splitlines():
            row = json.loads(line)
            for name, value in row.items():
                if name != "step":
                    out.setdefault(name, []).append((row["step"], value))
        return out


# -- routers -------------------------------------------------------------------------------------


class NextRouter(DynamicRouter):
    """Compares each position with the next one instead of the one before: reads the future."""

    def forward(self, x: Tensor, layout: Layout) -> Routing:
        q, k = self._keys(x)
        cos = (q[:, :-1] * k[:, 1:]).sum(-1)  # position t against t + 1
        prob = torch.cat([((1 - cos) / 2).clamp(0, 1), torch.ones_like(q[:, :1, 0])], dim=1)
        return Routing(prob, prob >= 0.5)


class MixingRouter(DynamicRouter):
    """Subtracts the batch's mean state before comparing: each row's decisions depend on the others."""

    def forward(self, x: Tensor, layout: Layout) -> Routing:
        return super().forward(x - x.mean(0, keepdim=True), layout)

    def step(self, x: Tensor, state: Any, *, active: Tensor) -> tuple[Routing, Any]:
        return super().step(x - x.mean(0, keepdim=True), state, active=active)


class WholeSequenceRouter(DynamicRouter):
    """Scales every probability by a gate read from the sequence's last state, as a router that
    normalises over the sequence would: a decision depends on the whole sequence. Decoding, which
    only has the sequence so far, gates with the newest state (so on two positions the two agree)."""

    def forward(self, x: Tensor, layout: Layout) -> Routing:
        prob = super().forward(x, layout).prob
        gate = torch.sigmoid(x[:, -1].sum(-1, keepdim=True))  # (B, 1)
        prob = torch.cat([prob[:, :1], prob[:, 1:] * gate], dim=1)
        return Routing(prob, prob >= 0.5)

    def step(self, x: Tensor, state: Any, *, active: Tensor) -> tuple[Routing, Any]:
        routing, after = super().step(x, state, active=active)
        prob = torch.where(state.started[:, None], routing.prob * torch.sigmoid(x[:, 0].sum(-1, keepdim=True)), 1.0)
        return Routing(prob, prob >= 0.5), after


@attrs.frozen(kw_only=True)
class BrokenRouterSpec(RouterSpec):
    kind: ClassVar[str] = "broken-router"
    module: type = NextRouter

    @property
    def ratio(self) -> float:
        return 4.0

    def build(self, *, dim: int) -> Any:
        return self.module(dim, target=4.0, loss_weight=0.03, smoothing=True)

    def parameter_count(self, *, dim: int) -> int:
        return 2 * dim * dim

    def flops_per_position(self, *, dim: int) -> float:
        return 12.0 * dim * dim


# -- every kit against its mutants -----------------------------------------------------------------


def mutants() -> list[tuple[str, Any, Any, str]]:
    """(name, kit, mutant, the invariant it must be caught breaking)."""
    from aunet.testing import (
        check_attention,
        check_pooler,
        check_router,
        check_splitter,
        check_stage,
        check_upsampler,
    )

    return [
        ("pooler-sees-next-segment", check_pooler, BrokenPoolerSpec(), "causality"),
        ("pooler-mixes-rows", check_pooler, BrokenPoolerSpec(module=MixingPooler), "batch independence"),
        ("upsampler-next-boundary", check_upsampler, BrokenUpsamplerSpec(), "causality"),
        ("stage-one-step-ahead", check_stage, BrokenStageSpec(), "causality"),
        ("backend-ignores-documents", check_attention, BrokenAttentionSpec(), "the masking rule"),
        ("backend-one-step-ahead", check_attention, BrokenAttentionSpec(backend=AheadBackend), "the masking rule"),
        ("splitter-batch-streaming-differ", check_splitter, FirstTerminatorSplitter(), "differs from batch"),
        ("router-reads-next-position", check_router, BrokenRouterSpec(), "causality"),
        ("router-mixes-rows", check_router, BrokenRouterSpec(module=MixingRouter), "batch independence"),
        ("router-reads-whole-sequence", check_router, BrokenRouterSpec(module=WholeSequenceRouter), "causality"),
    ]


def catch_counts(runs: int, *, shrink: bool = True) -> dict[str, int]:
    """How many of ``runs`` fresh, randomized runs of its kit (default example counts, no
    example database) catch each mutant, with the invariant it breaks. ``shrink`` off skips
    hypothesis's shrinking of the failing example: it only makes the example smaller, never
    decides whether one is found."""
    from hypothesis import settings

    settings.register_profile("fresh", database=None)  # hypothesis's defaults, no replay of old failures
    settings.load_profile("fresh")
    counts = {}
    for name, kit, mutant, invariant in mutants():
        caught = 0
        for _ in range(runs):
            try:
                kit(mutant, shrink=shrink)
            except AssertionError as exc:
                caught += invariant in str(exc)
        counts[name] = caught
    return counts


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(catch_counts(int(sys.argv[1]) if len(sys.argv) > 1 else 20, shrink="--no-shrink" not in sys.argv)))
