"""Data: corpora read whole (``corpus``) or streamed (``streaming``), the text a run trains on
(``source``), which encoding a run reads with (``encodings``), and the BPE baseline's tokenizer and
encoding (``bpe``)."""
