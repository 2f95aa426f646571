"""aunet's testing kits, for the project's own tests and for plugin authors. Needs ``hypothesis``
(``pip install aunet[test]``).

* ``check_splitter(splitter)``: total on any bytes, deterministic, streaming equal to batch,
  prefix-stable, no boundary inside a character, levels nest (``aunet.testing.splitters``).
* ``check_pooler(spec)``, ``check_upsampler(spec)``, ``check_stage(spec)``,
  ``check_attention(spec)``: every invariant the assembler relies on, alone and inside whole
  models (``aunet.testing.kits``).
* ``check_router(spec)``: a router's decisions causal, batch independent, equal in decoding and
  in the forward, with gradient through its estimator, alone and inside whole models
  (``aunet.testing.routers``).
* ``check_metric_writer(spec)``: a metric writer's contract: flush and close idempotent, each
  step read back once, a resumed run keeps what came before its checkpoint and drops what came
  after, other processes write nothing (``aunet.testing.writers``).
* ``small_specs()``, ``documents()``, ``pack()``, ``assert_causal()``,
  ``assert_matches_teacher_forcing()``: the strategies and model checks behind them
  (``aunet.testing.models``); ``small_specs`` draws every registered kind.
"""

from aunet.testing.kits import check_attention, check_pooler, check_stage, check_upsampler
from aunet.testing.models import (
    assert_causal,
    assert_matches_teacher_forcing,
    documents,
    pack,
    registered_examples,
    small_specs,
)
from aunet.testing.routers import check_router
from aunet.testing.splitters import (
    ALPHABET,
    MAX_BYTES,
    SCRIPT_ALPHABET,
    any_bytes,
    assert_levels_consistent,
    check_splitter,
    texts,
    valid_char_inner_bytes,
)
from aunet.testing.writers import check_metric_writer

__all__ = [
    "ALPHABET",
    "MAX_BYTES",
    "SCRIPT_ALPHABET",
    "any_bytes",
    "assert_causal",
    "assert_levels_consistent",
    "assert_matches_teacher_forcing",
    "check_attention",
    "check_metric_writer",
    "check_pooler",
    "check_router",
    "check_splitter",
    "check_stage",
    "check_upsampler",
    "documents",
    "pack",
    "registered_examples",
    "small_specs",
    "texts",
    "valid_char_inner_bytes",
]
