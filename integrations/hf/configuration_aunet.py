"""The Hugging Face configuration of an aunet model: the resolved spec, whole, as TOML text.

This file is also the remote code of an exported folder (``aunet export``), so it imports only
``transformers``: a machine with transformers alone reads it.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class AUNetConfig(PreTrainedConfig):
    """An aunet model for ``transformers``: the spec it was built from, and the token numbering.

    Every architectural figure lives in ``spec`` (aunet's resolved spec, TOML), which rebuilds the
    model exactly; the other fields are what ``transformers`` itself reads (vocabulary, special
    tokens, the longest input).
    """

    model_type = "aunet"
    _auto_class = "AutoConfig"  # save_pretrained writes auto_map and copies this file

    spec: str = ""
    """aunet's resolved spec (``aunet spec show`` prints the same)."""
    aunet_version: str = ""
    """The aunet that exported it (its code travels in ``aunet-runtime.zip``)."""
    step: int = 0
    """The training step of the exported checkpoint."""
    vocab_size: int = 259  # bytes 0..255, BOS, EOS, PAD
    max_position_embeddings: int = 1024  # the model's context, BOS included
    bos_token_id: int | None = 256
    eos_token_id: int | list[int] | None = 257
    pad_token_id: int | None = 258
    use_cache: bool = True
    tie_word_embeddings: bool = False


__all__ = ["AUNetConfig"]
