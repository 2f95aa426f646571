"""Token ids: 256 byte values, then BOS, EOS and PAD (docs/method.md section 1; PAD is ours)."""

BOS, EOS, PAD = 256, 257, 258
VOCAB_SIZE = 259
#: Target value of positions that predict nothing (padding, the start of the next document).
IGNORE = -100
