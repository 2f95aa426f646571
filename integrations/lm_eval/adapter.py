"""An lm-evaluation-harness adapter: run the harness's tasks (multiple choice, perplexity,
generation) on a trained AU-Net, and write their results as ``lm-eval`` writes them.

Why: the harness is how language models are compared on downstream tasks; with this adapter an
aunet checkpoint is scored by the same task definitions, prompts and metrics as any Hugging Face
model, so its figures can sit in the same tables.

How: the model reads bytes, so every request is UTF-8 encoded and scored byte by byte, with the
machinery aunet's own jobs use:

- ``loglikelihood`` (context, continuation): one row per request, BOS + context + continuation,
  cut from the left to the model's context; the sum of the continuation bytes' log-probabilities
  (nats), and whether each of them is the greedy choice among bytes and EOS (as ``sample_next``
  chooses: BOS and PAD never are). Rows are batched, longest first, right-padded with PAD
  (attention is causal, so padding changes nothing before it).
- ``loglikelihood_rolling`` (text): the text as one document, cut into the windows of
  ``aunet eval`` (``evaluation_rows``: consecutive windows of ``context`` positions, each byte
  predicted once from its own window); the EOS that ``aunet eval`` also scores is left out, since
  the harness's perplexity tasks score the text only. Note that lm-eval's own models overlap their
  windows (the last one gets a full context); aunet's do not, so that the harness's bits per byte
  is ``aunet eval``'s on the same document, less the EOS term.
- ``generate_until`` (context, gen_kwargs): ``aunet.jobs.inference.generate.decode`` with the stop strings,
  greedy unless ``do_sample`` with a temperature above 0; the text is cut before its first stop
  string, as the harness expects.

Contexts longer than the model's context are cut on the left; every cut is counted (``truncated``
and friends on the model) and reported with a RuntimeWarning, never silent.

lm-eval is an optional extra (``pip install 'aunet[eval]'``). This module imports without it, so
that the command line can always declare ``aunet harness``: ``AUNetLM`` (an
``lm_eval.api.model.LM``, registered as ``aunet``) is defined on first use, and using it, or
``run_harness``, without the extra raises an ``InputError`` saying how to install it.

Where: this module is the adapter's public face, and re-exports its names from three modules,
each of which imports without lm_eval as well: ``scoring`` (rows and their scores, no lm_eval
needed), ``model`` (``AUNetLM`` and its generation arguments) and ``harness`` (running the tasks
and writing their results).
"""

from __future__ import annotations

from typing import Any

from aunet.integrations.lm_eval.harness import (
    Harnessed,
    evaluate_tasks,
    format_table,
    metric_rows,
    results_name,
    run_harness,
)
from aunet.integrations.lm_eval.model import (
    DEFAULT_GEN_BYTES,
    GEN_KEYS,
    LM_EVAL_MISSING,
    MAX_GEN_BYTES,
    lm_class,
    make_lm,
)
from aunet.integrations.lm_eval.scoring import Scored, cut_at_stop, score_continuations, score_documents


def __getattr__(name: str) -> Any:
    if name == "AUNetLM":
        return lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_GEN_BYTES",
    "GEN_KEYS",
    "LM_EVAL_MISSING",
    "MAX_GEN_BYTES",
    "Harnessed",
    "Scored",
    "cut_at_stop",
    "evaluate_tasks",
    "format_table",
    "lm_class",
    "make_lm",
    "metric_rows",
    "results_name",
    "run_harness",
    "score_continuations",
    "score_documents",
]
