"""The lm-evaluation-harness model: ``AUNetLM``, an ``lm_eval.api.model.LM`` registered as
``aunet``, answering the harness's three requests with the rows of ``scoring`` and aunet's
decoding.

- ``loglikelihood`` and ``loglikelihood_rolling``: ``score_continuations`` and
  ``score_documents`` (``scoring``).
- ``generate_until`` (context, gen_kwargs): ``aunet.jobs.inference.generate.decode`` with the stop
  strings, greedy unless ``do_sample`` with a temperature above 0; the text is cut before its
  first stop string, as the harness expects. A task's generation arguments are checked first
  (``_checked_gen_kwargs``): one line naming the key, where lm-eval would raise.

Contexts longer than the model's context are cut on the left; every cut is counted (``truncated``
and friends on the model) and reported with a RuntimeWarning, never silent.

This module imports without lm_eval: ``AUNetLM`` is defined on first use (``lm_class``), and
using it without the ``eval`` extra raises an ``InputError`` saying how to install it.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path
from typing import Any

from aunet.core.encoding import Encoding, splitter_encoding
from aunet.core.errors import InputError
from aunet.integrations.lm_eval.scoring import cut_at_stop, score_continuations, score_documents

LM_EVAL_MISSING = "lm-evaluation-harness is not installed: pip install 'aunet[eval]'"
#: Bytes ``generate_until`` produces when a task gives no ``max_gen_toks`` (lm-eval's default).
DEFAULT_GEN_BYTES = 256
#: The most bytes one ``generate_until`` request produces, whatever the task asks (at a few
#: hundred bytes per second on a CPU, lm-eval's usual 256 take about a second).
MAX_GEN_BYTES = 8192
#: Requests' keys the generation understands; others are reported once and ignored.
GEN_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p"}


def _require_lm_eval() -> None:
    """An InputError, with the install line, where lm-eval is missing."""
    try:
        import lm_eval  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "lm_eval":
            raise InputError(LM_EVAL_MISSING) from None
        raise InputError(f"lm-evaluation-harness is installed but does not import: {exc}") from None


class _Adapter:
    """aunet as an lm-evaluation-harness model (``lm_eval.api.model.LM``, registered as
    ``aunet``): ``AUNetLM(ckpt=DIR)`` or ``AUNetLM(model=<AUNet>)``; ``batch_size`` rows per
    forward; ``device`` for a checkpoint (a given model stays where it is); ``max_bytes`` caps the
    new bytes of every generation (default: the task's ``max_gen_toks``, else 256);
    ``decode_threads`` torch threads for decoding steps (``auto``: one on a CPU for a few rows,
    as ``aunet generate``; None leaves the process's setting).

    ``truncated`` counts requests whose context was cut on the left, ``truncated_bytes`` the bytes
    cut, ``continuation_truncated`` continuations that did not fit the context alone.
    """

    def __init__(
        self,
        ckpt: str | Path | None = None,
        model: Any = None,
        batch_size: int | str = 8,
        device: Any = "cpu",
        max_bytes: int | None = None,
        decode_threads: int | str | None = "auto",
        max_batch_size: int | None = None,
        encoding: Encoding | None = None,
    ) -> None:
        super().__init__()
        if (ckpt is None) == (model is None):
            raise InputError("AUNetLM: give one of ckpt=DIR (a run or checkpoint folder) or model=<AUNet>")
        self.run = None
        if model is None:
            from aunet.jobs.runs.directory import load_run

            self.run = load_run(ckpt, device=device)
            model = self.run.model
        # How the model reads: its run's encoding (bytes and levels, or a BPE run's tokens), or
        # for a model given alone, its spec's splitters (a BPE model needs its run: ckpt=DIR).
        self.encoding = encoding or (self.run.encoding if self.run is not None else splitter_encoding(model.spec))
        self.model = model
        self.spec = model.spec
        self.context = self.spec.model.context  # positions per row, BOS included
        self.batch_size = _batch_size(batch_size)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        if self.max_bytes is not None and self.max_bytes < 1:
            raise InputError(f"AUNetLM: max_bytes must be at least 1, got {max_bytes}")
        self.decode_threads = decode_threads
        self._device = next(model.parameters()).device
        self.truncated = 0
        self.truncated_bytes = 0
        self.continuation_truncated = 0

    # -- lm_eval's three requests

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """(sum of the continuation bytes' log-probabilities, all greedy) per request."""
        pairs = [(_utf8(r.args[0]), _utf8(r.args[1])) for r in requests]
        scored = score_continuations(
            self.model, pairs, limit=self.context, batch_size=self.batch_size, encoding=self.encoding
        )
        cut = [s.dropped for s in scored if s.dropped]
        self._count(cut, len(requests), "loglikelihood", kept=self.context)
        whole = sum(1 for s in scored if s.continuation_dropped)
        if whole:
            self.continuation_truncated += whole
            warnings.warn(
                f"{whole} of {len(requests)} loglikelihood continuations are longer than the model's "
                f"context ({self.context} positions with BOS) on their own; scored their last "
                f"{self.context} bytes",
                RuntimeWarning,
                stacklevel=2,
            )
        results = [(s.logprob, s.greedy) for s in scored]
        for r, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", r.args, res)
        return results

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        """The log-likelihood (nats) of each whole text, BOS + bytes, EOS not scored."""
        texts = [_utf8(r.args[0]) for r in requests]
        results = score_documents(
            self.model, texts, context=self.context, batch_size=self.batch_size, encoding=self.encoding
        )
        for r, res in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood_rolling", r.args, res)
        return results

    def generate_until(self, requests: list[Any]) -> list[str]:
        """The text each request's context continues with, before its first stop string; requests
        with the same generation arguments are decoded together, ``batch_size`` rows at a time."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1] or {}, sort_keys=True, default=str), []).append(i)
        out: list[str] = [""] * len(requests)
        for members in groups.values():
            texts = self._generate([requests[i].args[0] for i in members], requests[members[0]].args[1])
            for i, text in zip(members, texts):
                out[i] = text
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("generate_until", r.args, res)
        return out

    # -- helpers

    def _generate(self, contexts: list[str], gen_kwargs: dict | None) -> list[str]:
        from lm_eval.models.utils import normalize_gen_kwargs

        from aunet.jobs.inference.generate import _generator, decode, sample_next
        from aunet.jobs.runtime.devices import default_decode_threads

        kwargs = dict(normalize_gen_kwargs(_checked_gen_kwargs(gen_kwargs), DEFAULT_GEN_BYTES))
        if kwargs["max_gen_toks"] > MAX_GEN_BYTES:
            warnings.warn(
                f"generate_until: the task asks for {kwargs['max_gen_toks']:,} new bytes per request; aunet "
                f"generates at most {MAX_GEN_BYTES:,} (a stop string usually ends a row long before)",
                RuntimeWarning,
                stacklevel=3,
            )
            kwargs["max_gen_toks"] = MAX_GEN_BYTES
        ignored = sorted(set(kwargs) - GEN_KEYS)
        if ignored:
            warnings.warn(
                f"generate_until: aunet ignores the generation arguments {', '.join(ignored)}",
                RuntimeWarning,
                stacklevel=3,
            )
        stops = [s.encode("utf-8") for s in kwargs["until"] if s]
        n = kwargs["max_gen_toks"] if self.max_bytes is None else min(kwargs["max_gen_toks"], self.max_bytes)
        temperature = float(kwargs.get("temperature") or 0.0) if kwargs.get("do_sample") else 0.0
        generator = _generator(self.model, 0) if temperature > 0 else None

        top_k = kwargs.get("top_k") if (kwargs.get("top_k") or 0) > 0 else None  # Hugging Face's 0: no top-k
        top_p = kwargs.get("top_p") if (kwargs.get("top_p") or 1.0) < 1.0 else None

        def choose(logits: Any) -> Any:  # (B, V) -> (B,)
            return sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)

        prompts = [_utf8(c) for c in contexts]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        cut: list[int] = []
        threads = self.decode_threads
        if threads == "auto":
            threads = default_decode_threads(min(len(order), self.batch_size), self._device)
        with warnings.catch_warnings():  # decode warns per row; one summary below instead
            warnings.simplefilter("ignore", RuntimeWarning)
            # batch_size rows at a time, longest prompts first; a row that finishes takes the
            # next waiting request (continuous batching).
            decoded = decode(
                self.model,
                [prompts[i] for i in order],
                n,
                choose=choose,
                encoding=self.encoding,
                stop=stops,
                threads=threads,
                batch_size=self.batch_size,
            )
        cut += [t for t in decoded.truncated if t]
        for i, new in zip(order, decoded.new_bytes):
            out[i] = cut_at_stop(new, stops).decode("utf-8", errors="replace")
        self._count(cut, len(prompts), "generate_until", kept=self.context - 1)
        return out

    def _count(self, cut: list[int], total: int, kind: str, *, kept: int) -> None:
        """Count and report the requests cut on the left."""
        if not cut:
            return
        self.truncated += len(cut)
        self.truncated_bytes += sum(cut)
        warnings.warn(
            f"{len(cut)} of {total} {kind} requests are longer than the model's context "
            f"({self.context} positions with BOS); kept their last {kept:,} {self.encoding.unit}, dropped "
            f"{sum(cut):,} bytes from the left in all",
            RuntimeWarning,
            stacklevel=3,
        )

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records in its results' ``config``."""
        info = {
            "aunet_spec": self.spec.name,
            "aunet_context": self.context,
            "aunet_truncated_requests": self.truncated,
            "aunet_truncated_bytes": self.truncated_bytes,
            "aunet_continuations_truncated": self.continuation_truncated,
        }
        if self.run is not None:
            info |= {"aunet_checkpoint": str(self.run.checkpoint), "aunet_step": self.run.step}
        return info

    @property
    def tokenizer_name(self) -> str:
        # Fingerprints lm-eval's request caches: UTF-8 bytes (no tokenizer), or a BPE run's tokens.
        return f"aunet-{self.encoding.name}"


def _checked_gen_kwargs(gen_kwargs: Any) -> dict[str, Any]:
    """A task's ``generation_kwargs`` with the values aunet reads checked: one line naming the
    key and what would be right, where lm-eval would raise (``max_gen_toks: 1e9`` is read as the
    number it means)."""
    kwargs = dict(gen_kwargs or {}) if isinstance(gen_kwargs, dict) or gen_kwargs is None else None
    if kwargs is None:
        raise InputError(f"generation_kwargs of the task must be a mapping, got {gen_kwargs!r}")
    until = kwargs.get("until", [])
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list) or not all(isinstance(u, str) for u in until):
        raise InputError(f"generation_kwargs.until of the task must be a string or a list of strings, got {until!r}")
    kwargs["until"] = until
    for key in ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens"):
        if key in kwargs and kwargs[key] is not None:
            value = kwargs[key]
            try:
                number = float(value) if not isinstance(value, bool) else float("nan")
            except (TypeError, ValueError):
                number = float("nan")
            if not math.isfinite(number) or number < 1 or number != int(number):
                raise InputError(
                    f"generation_kwargs.{key} of the task must be a whole number of at least 1, got {value!r}"
                )
            kwargs[key] = int(number)
    for key in ("temperature", "top_p"):
        if key in kwargs and kwargs[key] is not None:
            try:
                number = float(kwargs[key])
            except (TypeError, ValueError):
                number = float("nan")
            if not math.isfinite(number) or number < 0:
                raise InputError(
                    f"generation_kwargs.{key} of the task must be a number of at least 0, got {kwargs[key]!r}"
                )
            kwargs[key] = number
    if (
        "top_k" in kwargs
        and kwargs["top_k"] is not None
        and (isinstance(kwargs["top_k"], bool) or not isinstance(kwargs["top_k"], int))
    ):
        raise InputError(f"generation_kwargs.top_k of the task must be a whole number, got {kwargs['top_k']!r}")
    return kwargs


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _batch_size(value: int | str) -> int:
    """lm-eval's batch size (an int, or a string from ``model_args``); ``auto`` is not measured
    here: it means the default, 8."""
    if isinstance(value, str) and value.strip().lower().startswith("auto"):
        warnings.warn("AUNetLM: batch_size 'auto' is not supported; using 8", RuntimeWarning, stacklevel=3)
        return 8
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise InputError(f"AUNetLM: batch_size must be a whole number, got {value!r}") from None
    if size < 1:
        raise InputError(f"AUNetLM: batch_size must be at least 1, got {size}")
    return size


@functools.cache
def lm_class() -> type:
    """``AUNetLM``: the adapter as an ``lm_eval.api.model.LM``, registered as ``aunet``. Defined
    on first use, so that importing this module (as the command line does) needs no lm_eval and
    costs nothing; an InputError with the install line where lm_eval is missing."""
    _require_lm_eval()
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    @register_model("aunet")
    class AUNetLM(_Adapter, LM):
        __doc__ = _Adapter.__doc__

    AUNetLM.__module__ = __name__
    return AUNetLM


def make_lm(**kwargs: Any) -> Any:
    """An ``AUNetLM(**kwargs)``: ``ckpt=DIR`` or ``model=<AUNet>``, ``batch_size``, ``device``..."""
    return lm_class()(**kwargs)


def __getattr__(name: str) -> Any:
    if name == "AUNetLM":
        return lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
