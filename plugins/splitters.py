"""Built-in plugin: the paper's word splitters (``whitespace``, ``word-pair``, ``4-word``, and
``n-word`` for deeper hierarchies) and the script-aware ones (``script``, ``script-pair``,
``script-4``, ``script-n``), the reference's ``pretok`` and ``punct``, MEGABYTE's ``fixed``,
SpaceByte's ``spacelike`` and BLT's ``entropy``. Registered through the ``aunet`` entry-point group like any
third-party plugin."""

from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar
from aunet.splitters.entropy import Entropy
from aunet.splitters.patches import Fixed, Spacelike
from aunet.splitters.pretok import Pretok, Punct
from aunet.splitters.script import Script, ScriptFour, ScriptPair, ScriptSplitter
from aunet.splitters.words import FourWord, NWord, Whitespace, WordPair


@hookimpl
def aunet_register_splitters(registry: Registrar) -> None:
    for cls in (
        Whitespace,
        WordPair,
        FourWord,
        NWord,
        Script,
        ScriptPair,
        ScriptFour,
        ScriptSplitter,
        Pretok,
        Punct,
        Fixed,
        Spacelike,
        Entropy,
    ):
        registry.add_splitter(cls)
