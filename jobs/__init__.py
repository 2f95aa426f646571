"""aunet's jobs: everything that runs a model (the command line, the trainer and its components,
data streams, checkpoints, evaluation, generation, evaluation suites).

The layers: ``aunet.core`` (contracts, registry, specs, levels, the assembler) at the bottom,
components (``aunet.plugins``, ``aunet.splitters``) above it, jobs on top. Core never imports
jobs, plugins or splitters; ``tests/test_layers.py`` walks the imports and keeps it so.
"""
