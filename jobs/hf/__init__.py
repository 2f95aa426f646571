"""Where aunet's Hugging Face integration lived before 0.2: ``aunet.integrations.hf`` now.

Kept only for models exported before it moved: their remote code (``modeling_aunet.py``, copied
into every exported folder) imports ``aunet.jobs.hf.bridge`` from the installed aunet. Nothing of
aunet's own imports this package.
"""
