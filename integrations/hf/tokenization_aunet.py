"""The bytes tokenizer of an exported aunet model, numbered as aunet numbers tokens.

Ids 0..255 are the UTF-8 bytes of the text, 256 is BOS (put before every sequence, as aunet
trains), 257 EOS, 258 PAD. There is no vocabulary file: the numbering is fixed. Text that happens
to spell a special token ("<eos>") stays bytes (``split_special_tokens``), so any text round-trips;
decoding replaces invalid UTF-8 (a continuation cut inside a character) with U+FFFD rather than
dropping it.

This file is also remote code of an exported folder, so it imports only ``transformers``.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import AddedToken, PreTrainedTokenizer

BYTES = 256
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258


class AUNetTokenizer(PreTrainedTokenizer):
    """UTF-8 bytes as tokens, with aunet's BOS, EOS and PAD; pads on the left for generation."""

    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]
    _auto_class = "AutoTokenizer"

    def __init__(
        self,
        bos_token: str = "<bos>",
        eos_token: str = "<eos>",
        pad_token: str = "<pad>",
        add_bos_token: bool = True,
        padding_side: str = "left",
        split_special_tokens: bool = True,
        **kwargs,
    ) -> None:
        specials = {BOS_ID: bos_token, EOS_ID: eos_token, PAD_ID: pad_token}
        self._added_tokens_decoder = {
            i: t if isinstance(t, AddedToken) else AddedToken(str(t), special=True, normalized=False)
            for i, t in specials.items()
        }
        self.add_bos_token = add_bos_token
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            padding_side=padding_side,
            split_special_tokens=split_special_tokens,
            add_bos_token=add_bos_token,
            **kwargs,
        )

    @property
    def vocab_size(self) -> int:
        return BYTES

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(i): i for i in range(BYTES)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(b) for b in text.encode("utf-8", "surrogatepass")]  # one token string per byte

    def _convert_token_to_id(self, token: str) -> int | None:
        return ord(token) if len(token) == 1 and ord(token) < BYTES else None

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index) if index < BYTES else self._added_tokens_decoder[index].content

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = bytearray()
        for token in tokens:
            if len(token) == 1 and ord(token) < BYTES:
                data.append(ord(token))
            else:
                data += token.encode("utf-8")
        return data.decode("utf-8", errors="replace")

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        bos = [BOS_ID] if self.add_bos_token else []
        return bos + token_ids_0 + (token_ids_1 or [])

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        if already_has_special_tokens:
            return [1 if i >= BYTES else 0 for i in token_ids_0 + (token_ids_1 or [])]
        return [1] * self.add_bos_token + [0] * (len(token_ids_0) + len(token_ids_1 or []))

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the numbering is fixed: nothing to save


__all__ = ["AUNetTokenizer"]
