"""Experiments of many runs: runs in turns (``turns``), ``aunet compare`` (``compare``) and the
paper's scaling laws (``plan``)."""
