"""Torch modules of the built-in plugins, imported when a model is built (specs stay torch-free)."""
