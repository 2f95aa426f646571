"""Which ``Encoding`` a run reads with: the one place that knows the kinds (``aunet.core.encoding``).

A byte model reads through its spec's splitters; the BPE baseline through the tokenizer its run
trained, which the run keeps in ``tokenizer.json`` and in every checkpoint's ``meta.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aunet.core.encoding import Encoding, splitter_encoding
from aunet.core.errors import InputError
from aunet.core.spec import pin_splitters

if TYPE_CHECKING:
    from aunet.core.spec import Spec

#: A BPE run's tokenizer, beside its checkpoints (each checkpoint's meta.json holds it too).
TOKENIZER_FILE = "tokenizer.json"


def saved_encoding(spec: Spec, meta: Mapping[str, Any], *, source: str) -> Encoding:
    """The encoding of a model whose checkpoint's ``meta.json`` (read from ``source``) is ``meta``."""
    if not spec.model.bpe:
        return splitter_encoding(spec)
    from aunet.jobs.data.bpe import BpeEncoding, BpeTokenizer

    if not isinstance(meta.get("tokenizer"), dict):
        raise InputError(f"{source}: a BPE model's checkpoint, but it records no tokenizer")
    return BpeEncoding.of(BpeTokenizer.from_json(json.dumps(meta["tokenizer"]), source=source), spec)


def training_encoding(
    spec: Spec,
    corpus: Any,
    *,
    run_dir: Path,
    meta: Mapping[str, Any] | None,
    notify: Callable[[str], None],
) -> tuple[Encoding, Spec]:
    """The encoding a run trains with, and its spec with what it measured (a BPE model's bytes
    per token) or pinned (a splitter's model: ``aunet.core.spec.pin_splitters``, before any text is
    read). ``corpus`` is the run's text held in memory; ``meta`` the checkpoint it resumes (None
    for a new run): a resumed BPE run keeps its tokenizer, a new one trains it on the training
    split."""
    if not spec.model.bpe:
        spec = pin_splitters(spec)
        return splitter_encoding(spec), spec
    from aunet.jobs.data.bpe import BpeEncoding, BpeTokenizer, bytes_per_token, trained_tokenizer, with_bytes_per_token

    if corpus is None:
        raise InputError(
            "a BPE model reads its corpus whole (its tokenizer is trained on the training split "
            'first); set [train.data] stream = "off", or train a byte model on the stream'
        )
    if meta is not None:
        if (run_dir / TOKENIZER_FILE).is_file():
            return BpeEncoding.of(BpeTokenizer.load(run_dir / TOKENIZER_FILE), spec), spec
        if isinstance(meta.get("tokenizer"), dict):
            return saved_encoding(spec, meta, source="meta.json"), spec
    config = spec.model.tokenizer
    text = "the training split" if config.trained_on == "train" else config.trained_on
    notify(f"training a BPE tokenizer of {config.vocab_size:,} ids on {text}")
    tokenizer = trained_tokenizer(config, corpus)
    if spec.model.tokenizer.bytes_per_token is None:
        spec = with_bytes_per_token(spec, bytes_per_token(tokenizer, (d.data for d in corpus.train)))
    return BpeEncoding.of(tokenizer, spec), spec
