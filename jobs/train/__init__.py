"""Training: the loop (``loop``), one optimizer step and its state (``trainer``), the learning-rate
schedule and budget (``schedule``), where a run starts and what a resume may change (``resume``),
saving and restoring (``checkpointer``), evaluation and the sample during a run (``evaluator``),
stopping on a signal (``signals``), what a run shows and records (``metrics``), how it ended
(``summary``) and profiling (``profiling``)."""
