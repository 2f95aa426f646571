"""What the Hugging Face wrapper (``modeling_aunet``) asks of aunet: build a model from its spec,
score inputs teacher-forced, prefill the per-stage KV caches and decode one token per row.

The wrapper is remote code that imports only ``transformers`` and ``torch``; it reaches aunet
through this module (the installed aunet, or the copy bundled in an export). Keeping the logic
here means it is aunet's own, tested with it, and versioned with it.

Inputs come as Hugging Face gives them: (B, T) ids with an attention mask, usually padded on the
left (generation) or the right (scoring). Each row's real tokens (mask 1, one contiguous run) are
moved to the start of a right-padded batch, which aunet's causal stages read exactly as if the row
were alone, and the logits are put back where the tokens were (zeros at padding). A row's levels
come from the model's encoding (``aunet.core.encoding``: the spec's streaming splitters): a BOS is
a document start at the top level (the stream restarts there), a byte gets the level its splitter
gives it the moment it exists, EOS and PAD level 0, as in training.

A splitter that reads bytes through a model (BLT's entropy patches) travels with the export: its
model's files go to ``splitters/level-N/`` of the exported folder (``write_splitter_models``), the
config's spec names that folder, relative (``exported_spec``), and ``build`` reads it from the
folder or Hub repository the config came from (``fetch``), checked against the SHA-256 the spec
pins.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import attrs
import torch
from torch import Tensor

from aunet.core import decoding
from aunet.core.convert import parse_spec
from aunet.core.encoding import IdStream, splitter_encoding
from aunet.core.model import AUNet, ShapeMode, build_model
from aunet.core.spec import Spec
from aunet.core.splitter import ModelSplitter
from aunet.core.tokens import BOS, EOS, PAD


def aunet_version() -> str:
    from aunet.core.version import version

    return version()


def build(spec_text: str, fetch: Callable[[str], str] | None = None) -> AUNet:
    """The model of an exported config's ``spec`` (weights as initialized; the caller loads them).
    ``fetch`` gives the local path of a file of the exported folder (or Hub repository) by name:
    where a splitter's model is read from."""
    # The model's spec; the [train] table a run's spec carries is the trainer's, not the model's.
    spec = parse_spec(spec_text, source="config.json (spec)", ignore=("train",))
    levels = list(spec.levels)
    for i, level in enumerate(levels):
        splitter = level.splitter
        if isinstance(splitter, ModelSplitter) and not Path(splitter.model).is_absolute():
            if fetch is None:
                raise ValueError(
                    f"levels[{i}].splitter reads a model from the exported folder ({splitter.model}); "
                    "load the model with from_pretrained(FOLDER), which finds it there"
                )
            local = [Path(fetch(f"{splitter.model}/{name}")) for name in splitter.model_files()]
            levels[i] = attrs.evolve(level, splitter=splitter.at(str(local[0].parent.absolute())))
    return build_model(attrs.evolve(spec, levels=tuple(levels)))


def splitter_folder(level: int) -> str:
    """Where an export keeps the model of the splitter of ``level``, relative to its folder."""
    return f"splitters/level-{level}"


def exported_spec(spec: Spec) -> Spec:
    """The spec an export's config records: a splitter that reads a model reads it from the
    export's own folder (``splitter_folder``, relative), pinned to the same SHA-256."""
    levels = tuple(
        attrs.evolve(level, splitter=level.splitter.at(splitter_folder(i)))
        if isinstance(level.splitter, ModelSplitter)
        else level
        for i, level in enumerate(spec.levels)
    )
    return attrs.evolve(spec, levels=levels)


def write_splitter_models(model: AUNet, folder: str) -> None:
    """Copy the files each splitter of ``model`` that reads a model reads into ``folder``
    (``splitter_folder``), beside the export's weights."""
    for i, level in enumerate(model.spec.levels):
        splitter = level.splitter
        if isinstance(splitter, ModelSplitter):
            target = Path(folder) / splitter_folder(i)
            target.mkdir(parents=True, exist_ok=True)
            for name in splitter.model_files():
                shutil.copyfile(Path(splitter.model) / name, target / name)


@attrs.define(eq=False)
class Rows:
    """The real tokens of each row of a padded (B, T) batch, and where they sit in it."""

    ids: list[list[int]]  # per row, its tokens (mask 1)
    start: list[int]  # per row, the position of its first real token in the padded batch
    width: int  # T

    @classmethod
    def of(cls, input_ids: Tensor, attention_mask: Tensor | None) -> Rows:
        ids = input_ids.tolist()
        if attention_mask is None:
            return cls(ids, [0] * len(ids), input_ids.shape[1])
        rows, starts = [], []
        for r, (row, mask) in enumerate(zip(ids, attention_mask.tolist())):
            real = [i for i, m in enumerate(mask) if m]
            if real and real[-1] - real[0] + 1 != len(real):
                raise ValueError(
                    f"row {r} of attention_mask has padding between real tokens; aunet reads each "
                    "row's tokens as one run (pad on the left or on the right)"
                )
            starts.append(real[0] if real else 0)
            rows.append([row[i] for i in real])
        return cls(rows, starts, input_ids.shape[1])

    def check(self, model: AUNet) -> None:
        context = model.spec.model.context
        for r, row in enumerate(self.ids):
            if not row:
                raise ValueError(f"row {r} has no tokens (its attention_mask is all zeros)")
            if len(row) > context:
                raise ValueError(
                    f"row {r} has {len(row):,} tokens; this model reads at most {context:,} "
                    "(its context, BOS included): keep the last ones"
                )
            bad = next((t for t in row if not 0 <= t < model.vocab_size), None)
            if bad is not None:
                raise ValueError(
                    f"row {r} holds token id {bad}; ids are 0..255 (bytes), {BOS} (BOS), {EOS} (EOS), {PAD} (PAD)"
                )

    def packed(self, model: AUNet) -> tuple[Tensor, Tensor, Tensor, list[IdStream]]:
        """Right-padded (B, P) tokens and levels, (B,) lengths, and each row's id stream after its
        tokens (ready for the next byte). Levels come from the model's encoding, a document at a
        time: a BOS starts one (at the top level, the splitters afresh); its bytes take their
        levels as one string, whatever EOS or PAD sits between them (level 0)."""
        b, p = len(self.ids), max(len(r) for r in self.ids)
        tokens = torch.full((b, p), PAD, dtype=torch.long)
        levels = torch.zeros((b, p), dtype=torch.uint8)
        encoding = splitter_encoding(model.spec)
        streams = []
        for r, row in enumerate(self.ids):
            tokens[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            starts = [0] + [i for i, t in enumerate(row) if t == BOS and i > 0]
            for start, end in zip(starts, [*starts[1:], len(row)]):
                if row[start] == BOS:
                    levels[r, start] = model.depth
                at = [i for i in range(start, end) if row[i] < 256]  # the document's bytes
                prompt = encoding.prompt(bytes(row[i] for i in at), len(at))
                if at:
                    levels[r, at] = torch.from_numpy(prompt.levels)
            streams.append(prompt.stream)
        lengths = torch.tensor([len(r) for r in self.ids])
        return tokens, levels, lengths, streams

    def unpack(self, logits: Tensor) -> Tensor:
        """(B, P, V) logits of the packed rows -> (B, T, V) at the rows' own positions (zeros at padding)."""
        out = logits.new_zeros(logits.shape[0], self.width, logits.shape[-1])
        for r, (row, start) in enumerate(zip(self.ids, self.start)):
            out[r, start : start + len(row)] = logits[r, : len(row)]
        return out

    def several_documents(self) -> bool:
        return any(BOS in row[1:] for row in self.ids)


@torch.no_grad()
def teacher_forced(model: AUNet, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B, T, V) next-token logits of every position, as aunet's forward gives them (eager
    shapes: no boundary is dropped)."""
    rows = Rows.of(input_ids, attention_mask)
    rows.check(model)
    tokens, levels, _, _ = rows.packed(model)
    device = input_ids.device
    logits = model(
        tokens.to(device), levels.to(device), shapes=ShapeMode.EAGER, doc_mask=rows.several_documents()
    ).logits
    return rows.unpack(logits.float())


class AUNetCache:
    """aunet's decoding state for ``generate``: every stage's KV cache (``aunet.core.decoding``),
    each row's id stream (its encoding's), and which rows still decode (a row that was fed EOS or PAD is
    finished: it is carried along and its caches no longer change)."""

    def __init__(self, state: decoding.DecodeState, streams: list[IdStream], seen: int) -> None:
        self.state = state
        self.streams = streams
        self.alive = [True] * len(streams)
        self.seen = seen  # positions of the padded batch so far (what ``transformers`` counts)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def __len__(self) -> int:  # transformers tests ``if cache`` on some paths
        return 1


@torch.no_grad()
def prefill(model: AUNet, input_ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, AUNetCache]:
    """(B, T, V) logits of every position (equal to ``teacher_forced``'s) and the caches after
    them. The caches hold up to the model's context per stage; past it each stage attends to its
    last ``context`` positions, as ``aunet generate`` does."""
    rows = Rows.of(input_ids, attention_mask)
    rows.check(model)
    if rows.several_documents():
        raise ValueError("generation reads one document per row, but a row holds a BOS after its start")
    tokens, levels, lengths, streams = rows.packed(model)
    device = input_ids.device
    state = decoding.new_state(model, len(rows.ids), model.spec.model.context)
    logits = decoding.prefill(
        model, state, tokens.to(device), levels.to(device), lengths.to(device), every_position=True
    )
    return rows.unpack(logits.float()), AUNetCache(state, streams, rows.width)


@torch.no_grad()
def step(model: AUNet, cache: AUNetCache, input_ids: Tensor) -> Tensor:
    """(B, 1, V) next-token logits after appending (B, 1) tokens, one per row. A byte continues
    its row; EOS, PAD or BOS finishes it."""
    level = []
    for r, t in enumerate(input_ids[:, -1].tolist()):
        if cache.alive[r] and 0 <= t < 256:
            level.append(cache.streams[r].push(t).level)
        else:
            cache.alive[r] = False
            level.append(0)
    fed = input_ids[:, -1].clamp(0, 255)
    logits = decoding.step(model, cache.state, fed, level, cache.alive)  # (B, V)
    cache.seen += 1
    return logits.float()[:, None]


def write_runtime(path: str) -> None:
    """``aunet-runtime.zip`` at ``path``: the runtime this process runs (copied as it is when aunet
    itself came from such a zip, else built from the installed packages)."""
    import importlib.util
    import shutil
    from pathlib import Path

    # Where the import system found aunet (already imported: nothing is loaded); a zipimporter's
    # archive is the zip it came from.
    source = getattr(importlib.util.find_spec("aunet").loader, "archive", None)
    if source is not None and Path(source).is_file():
        shutil.copyfile(source, path)
        return
    from aunet.integrations.hf.runtime import write_runtime as build

    build(Path(path))
