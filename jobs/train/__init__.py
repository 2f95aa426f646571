"""Training: the loop (``loop``), one optimizer step (``trainer``), resume rules (``resume``), what a run
shows and records (``metrics``) and profiling."""
