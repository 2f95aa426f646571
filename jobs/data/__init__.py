"""Data: corpora read whole (``corpus``) or streamed (``streaming``), the text a run trains on
(``source``), and the BPE baseline's tokenizer (``bpe``)."""
