"""Built-in splitters. Each is a plugin kind: see ``aunet plugins``."""

from aunet.splitters.words import FourWord, NWord, Whitespace, WordPair, WordSplitter, word_classes

__all__ = ["FourWord", "NWord", "Whitespace", "WordPair", "WordSplitter", "word_classes"]
