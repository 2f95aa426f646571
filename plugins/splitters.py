"""Built-in plugin: the paper's word splitters (``whitespace``, ``word-pair``, ``4-word``) and
``n-word`` for deeper hierarchies. Registered through the ``aunet`` entry-point group like any
third-party plugin."""

from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar
from aunet.splitters.words import FourWord, NWord, Whitespace, WordPair


@hookimpl
def aunet_register_splitters(registry: Registrar) -> None:
    for cls in (Whitespace, WordPair, FourWord, NWord):
        registry.add_splitter(cls)
