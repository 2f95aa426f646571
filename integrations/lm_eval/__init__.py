"""aunet for lm-evaluation-harness (the ``aunet[eval]`` extra): ``adapter`` scores a checkpoint on
the harness's tasks (``AUNetLM``, ``run_harness``); the ``aunet harness`` command comes with it.
Importing this package needs no ``lm_eval``."""
