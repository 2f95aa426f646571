"""Built-in splitters. Each is a plugin kind: see ``aunet plugins``."""

from aunet.splitters.script import Script, ScriptFour, ScriptPair, ScriptSplitter, script_classes
from aunet.splitters.words import FourWord, NWord, Whitespace, WordPair, WordSplitter, word_classes

__all__ = [
    "FourWord",
    "NWord",
    "Script",
    "ScriptFour",
    "ScriptPair",
    "ScriptSplitter",
    "Whitespace",
    "WordPair",
    "WordSplitter",
    "script_classes",
    "word_classes",
]
