"""The ``aunet`` command line: ``main`` dispatches; each command is a module of its own."""
