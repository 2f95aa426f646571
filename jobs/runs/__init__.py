"""Run directories and checkpoints: what a run holds on disk, who holds it, and reading it back."""
