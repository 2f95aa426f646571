"""Using a trained model: evaluation (``evaluate``), generation (``generate``) and evaluation
suites (``suites``)."""
