"""Built-in plugins, registered through the ``aunet`` entry-point group exactly like third-party
ones (see ``aunet.core.hookspecs`` for how to write one)."""
