"""Hook specifications: how a plugin adds splitters, routers, stages, poolers, upsamplers, attention
backends and metric writers to aunet.

Writing a plugin
================

A plugin is a module (or any object) with functions marked ``@hookimpl`` and named after the hooks
below. Each registration hook receives the registry and calls its typed ``add_...`` method once per
class. The class constant ``kind`` is the name spec files use::

    # my_splitters.py
    from typing import ClassVar
    import attrs
    import numpy as np
    from aunet.core import Chars, CharTable, Splitter, hookimpl
    from aunet.splitters.words import word_classes, SYMBOL

    @attrs.frozen(kw_only=True)
    class Sentences(Splitter):
        '''Ends of sentences: the whitespace after '.', '!' or '?'.'''

        kind: ClassVar[str] = "sentences"

        def char_table(self) -> CharTable: ...
        def marks(self, chars: Chars) -> np.ndarray: ...   # batch, vectorized
        def start(self): ...                                # the same rules as a state machine
        def step(self, state, cls, nbytes): ...

    @hookimpl
    def aunet_register_splitters(registry):
        registry.add_splitter(Sentences)

Make it discoverable by declaring an entry point in the ``aunet`` group of your package::

    [project.entry-points.aunet]
    my-splitters = "my_splitters"

``aunet plugins`` then lists ``sentences`` with your distribution and version, and any spec can say
``splitter = { kind = "sentences" }``. ``aunet.testing.check_splitter(Sentences())`` runs the
properties every splitter must have (batch equals streaming, prefix-stable, total on any bytes).
``examples/aunet-example-splitter`` is a complete, installable example.

Without packaging (a notebook, a test), register the module on a registry directly:
``registry.register(my_splitters)``.

Built-in components are registered through exactly this path, from the entry points of the
``aunet`` distribution itself. Setting ``AUNET_DISABLE_PLUGIN_AUTOLOAD=1`` stops third-party
entry points from loading (built-ins still load); ``AUNET_PLUGINS=name,name`` then loads the named
ones only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from aunet.cli.options import Commands
    from aunet.core.registry import Registrar

PROJECT = "aunet"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate hook implementations with this.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aunet_register_splitters(registry: Registrar) -> None:
    """Add splitter classes with ``registry.add_splitter(cls)``.

    Called once per plugin, when the plugin is loaded, before any spec is read. ``cls`` must
    subclass ``aunet.core.Splitter``, be a frozen attrs class (its fields are its spec options) and
    define a unique ``kind``. Returns nothing.
    """


@hookspec
def aunet_register_routers(registry: Registrar) -> None:
    """Add router spec classes with ``registry.add_router(cls)``.

    Called once per plugin, when it is loaded. ``cls`` subclasses ``aunet.core.RouterSpec``: a
    frozen attrs class whose fields are the router's options (``router = { kind = "...", ... }``
    in a level of a spec, in place of a splitter) and whose ``build(dim=...)`` makes the
    ``aunet.core.Router`` module that reads the level below's encoder output and decides its
    boundaries (the contract is on ``Router``). ``aunet.testing.check_router(spec)`` checks it.
    Returns nothing.
    """


@hookspec
def aunet_register_stages(registry: Registrar) -> None:
    """Add stage spec classes with ``registry.add_stage(cls)``.

    Called once per plugin, when it is loaded. ``cls`` subclasses ``aunet.core.StageSpec``: a
    frozen attrs class whose fields are the stage's options and whose ``build(dim=...)`` makes the
    ``aunet.core.Stage`` module (the width comes from the level, not from the stage's spec).
    Returns nothing.
    """


@hookspec
def aunet_register_poolers(registry: Registrar) -> None:
    """Add pooler spec classes with ``registry.add_pooler(cls)``.

    Called once per plugin, when it is loaded. ``cls`` subclasses ``aunet.core.PoolerSpec``;
    ``build(dim_in=..., dim_out=...)`` makes the ``aunet.core.Pooler``. Returns nothing.
    """


@hookspec
def aunet_register_upsamplers(registry: Registrar) -> None:
    """Add upsampler spec classes with ``registry.add_upsampler(cls)``.

    Called once per plugin, when it is loaded. ``cls`` subclasses ``aunet.core.UpsamplerSpec``;
    ``build(dim_coarse=..., dim_fine=...)`` makes the ``aunet.core.Upsampler``. Returns nothing.
    """


@hookspec
def aunet_register_attention(registry: Registrar) -> None:
    """Add attention backend spec classes with ``registry.add_attention(cls)``.

    Called once per plugin, when it is loaded. ``cls`` subclasses ``aunet.core.AttentionSpec``;
    stages resolve their backend once, when the model is built (``resolve(device)``), and an
    unavailable backend says why. Returns nothing.
    """


@hookspec
def aunet_register_metric_writers(registry: Registrar) -> None:
    """Add metric writer spec classes with ``registry.add_metric_writer(cls)``.

    Called once per plugin, when it is loaded. ``cls`` subclasses ``aunet.core.MetricWriterSpec``:
    a frozen attrs class whose fields are the writer's options (``[train.metrics] writers =
    [{ kind = "...", ... }]``) and whose ``open(run)`` returns the ``aunet.core.MetricWriter`` of
    one invocation of a run, on the main process only (``aunet.core.writers`` states the
    contract). Returns nothing. For example::

        from pathlib import Path
        from typing import ClassVar
        import csv
        import attrs
        from aunet.core import MetricRun, MetricWriter, MetricWriterSpec, hookimpl

        class CsvWriter(MetricWriter):
            def __init__(self, path: Path, resume_step: int | None) -> None:
                kept = []
                if resume_step is not None and path.exists():   # keep the steps up to the checkpoint
                    with path.open(newline="") as f:
                        kept = [r for r in csv.reader(f) if int(r[0]) <= resume_step]
                self.file = path.open("w", newline="")
                self.out = csv.writer(self.file)
                self.out.writerows(kept)

            def write(self, step, metrics):
                self.out.writerows([step, name, value] for name, value in metrics.items())

            def flush(self):
                self.file.flush()

            def close(self):
                self.file.close()                               # idempotent: closing twice is fine

        @attrs.frozen(kw_only=True)
        class CsvSpec(MetricWriterSpec):
            '''Scalars as step,name,value lines of scalars.csv.'''

            kind: ClassVar[str] = "csv"

            def open(self, run: MetricRun) -> MetricWriter:
                return CsvWriter(run.directory / "scalars.csv", run.resume_step)

        @hookimpl
        def aunet_register_metric_writers(registry):
            registry.add_metric_writer(CsvSpec)

    ``aunet.testing.check_metric_writer(CsvSpec(), read=...)`` checks the contract.
    """


@hookspec
def aunet_add_commands(commands: Commands) -> None:
    """Add commands to the ``aunet`` command line with ``commands.add_command(name, help=...,
    run=...)``, which returns the command's ``argparse`` parser for its arguments; ``run(args)``
    returns the exit status. An ``AunetError`` raised by ``run`` is printed as one line, exit 2.

    Called once when the command line starts, for every plugin of the ``aunet.commands``
    entry-point group (aunet's own commands first, then its integrations', then third parties'),
    never when aunet is used as a library. A name already taken is an error naming both plugins.
    Returns nothing. ``examples/aunet-example-command`` is a complete, installable example.
    """
