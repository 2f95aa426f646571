"""aunet for other ecosystems, behind optional extras: Hugging Face ``transformers`` (``hf``, the
``aunet[hf]`` extra) and lm-evaluation-harness (``lm_eval``, the ``aunet[eval]`` extra). Only the
command line and the plugin hooks reach them; nothing below imports them."""
