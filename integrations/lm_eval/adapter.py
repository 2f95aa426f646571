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
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from aunet.core.encoding import Encoding, Pair, splitter_encoding
from aunet.core.errors import AunetError, InputError, did_you_mean

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


# -- rows and scores (no lm_eval needed) ---------------------------------------------------------


@attrs.frozen
class Scored:
    """One continuation's score."""

    logprob: float  # nats, summed over the scored bytes
    greedy: bool  # every scored byte is the argmax among bytes and EOS
    dropped: int  # bytes cut from the left of context + continuation
    continuation_dropped: int  # of those, bytes of the continuation itself (it did not fit alone)


def _row_batch(pairs: Sequence[Pair]) -> Any:
    """(B, T) tokens, levels and targets of context-continuation rows, right-padded with PAD
    (level 0, IGNORE targets); only each row's continuation has targets."""
    from aunet.core.tokens import IGNORE, PAD
    from aunet.jobs.data.corpus import Batch

    width = max(len(p.encoded) - 1 for p in pairs)
    tokens = np.full((len(pairs), width), PAD, dtype=np.int64)  # (B, T)
    levels = np.zeros((len(pairs), width), dtype=np.uint8)  # (B, T)
    targets = np.full((len(pairs), width), IGNORE, dtype=np.int64)  # (B, T)
    for r, pair in enumerate(pairs):
        e = pair.encoded  # (n + 1,) BOS + the row's ids
        n = len(e) - 1
        ids = e.tokens
        tokens[r, :n] = ids[:-1]
        levels[r, :n] = e.levels[:-1]
        targets[r, n - pair.scored : n] = ids[n - pair.scored + 1 :]
    return Batch(tokens, levels, targets)


def _trim(batch: Any) -> Any:
    """The batch without its trailing columns that predict nothing in any row (causal attention:
    dropping them changes nothing before them)."""
    from aunet.core.tokens import IGNORE
    from aunet.jobs.data.corpus import Batch

    used = np.nonzero((batch.targets != IGNORE).any(0))[0]
    width = int(used[-1]) + 1 if len(used) else 1
    return Batch(batch.tokens[:, :width], batch.levels[:, :width], batch.targets[:, :width])


def _forward_scores(model: Any, batch: Any) -> tuple[list[float], list[bool]]:
    """Per row: the summed log-probability (nats) of its targets, and whether every target is
    the greedy choice (``sample_next`` at temperature 0: BOS and PAD excluded)."""
    import torch

    from aunet.core.tokens import IGNORE
    from aunet.jobs.inference.generate import sample_next
    from aunet.jobs.runtime.devices import model_autocast

    device = next(model.parameters()).device
    tokens, levels, targets = batch.tensors(device)  # (B, T) each
    with torch.no_grad(), model_autocast(model):
        out = model(tokens, levels, capacity=batch.capacity(model.depth), doc_mask=False)
    logits = out.logits.float()  # (B, T, V)
    scored = targets != IGNORE  # (B, T)
    picked = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T)
    logprob = (picked.double() * scored).sum(1)  # (B,)
    flat = logits.view(-1, logits.shape[-1])  # (B * T, V)
    greedy = sample_next(flat, temperature=0.0, top_k=None, top_p=None, generator=None).view(targets.shape)  # (B, T)
    is_greedy = ((greedy == targets) | ~scored).all(1)  # (B,)
    return logprob.tolist(), is_greedy.tolist()


def _chunks(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def score_continuations(
    model: Any,
    pairs: Sequence[tuple[bytes, bytes]],
    *,
    limit: int,
    batch_size: int = 8,
    encoding: Encoding | None = None,
) -> list[Scored]:
    """The log-probability of each continuation after its context (``loglikelihood``), in the
    order given; rows of at most ``limit`` positions after BOS, batched longest first.
    ``encoding``: how the model reads (default: its spec's splitters)."""
    encoding = encoding if encoding is not None else splitter_encoding(model.spec)
    rows = [encoding.pair(c, x, limit) for c, x in pairs]
    out: list[Scored | None] = [None] * len(rows)
    todo = [i for i, r in enumerate(rows) if r.scored > 0]
    for i, r in enumerate(rows):
        if r.scored == 0:  # nothing to score: log 1, trivially greedy
            out[i] = Scored(0.0, True, r.dropped, r.continuation_dropped)
    order = sorted(todo, key=lambda i: -len(rows[i].encoded))
    was_training = model.training
    model.eval()
    try:
        for chunk in _chunks(order, batch_size):
            logprob, greedy = _forward_scores(model, _row_batch([rows[i] for i in chunk]))
            for i, lp, g in zip(chunk, logprob, greedy):
                out[i] = Scored(lp, g, rows[i].dropped, rows[i].continuation_dropped)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def score_documents(
    model: Any, texts: Sequence[bytes], *, context: int, batch_size: int = 8, encoding: Encoding | None = None
) -> list[float]:
    """The log-likelihood (nats) of each text's bytes as a document, BOS first, in the windows of
    ``aunet eval`` (``evaluation_rows``), the EOS not scored (``loglikelihood_rolling``). Windows
    of every document are batched together."""
    from aunet.jobs.data.corpus import evaluation_rows
    from aunet.jobs.inference.evaluate import _join

    encoding = encoding if encoding is not None else splitter_encoding(model.spec)
    windows = [
        (d, row) for d, text in enumerate(texts) for row in evaluation_rows([encoding.encode(text, eos=False)], context)
    ]
    totals = [0.0] * len(texts)
    was_training = model.training
    model.eval()
    try:
        for chunk in _chunks(range(len(windows)), batch_size):
            batch = _trim(_join([windows[w][1] for w in chunk]))
            logprob, _ = _forward_scores(model, batch)
            for w, lp in zip(chunk, logprob):
                totals[windows[w][0]] += lp
    finally:
        model.train(was_training)
    return totals


def cut_at_stop(data: bytes, stops: Sequence[bytes]) -> bytes:
    """``data`` before the earliest occurrence of any stop string (the harness scores that)."""
    cut = min((i for i in (data.find(s) for s in stops if s) if i >= 0), default=len(data))
    return data[:cut]


# -- the lm_eval model ---------------------------------------------------------------------------


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
        for chunk in _chunks(order, self.batch_size):
            threads = self.decode_threads
            if threads == "auto":
                threads = default_decode_threads(len(chunk), self._device)
            with warnings.catch_warnings():  # decode warns per row; one summary below instead
                warnings.simplefilter("ignore", RuntimeWarning)
                decoded = decode(
                    self.model,
                    [prompts[i] for i in chunk],
                    n,
                    choose=choose,
                    encoding=self.encoding,
                    stop=stops,
                    threads=threads,
                )
            cut += [t for t in decoded.truncated if t]
            for i, new in zip(chunk, decoded.new_bytes):
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


# -- running tasks -------------------------------------------------------------------------------


@attrs.frozen
class Harnessed:
    """What one ``run_harness`` produced, and where lm-eval's files went."""

    results: dict[str, Any]
    results_file: Path
    samples_files: dict[str, Path]


def run_harness(
    ckpt: str | Path,
    tasks: list[str],
    *,
    out: Path,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 8,
    device: Any = "cpu",
) -> dict:
    """Evaluate a checkpoint on lm-eval tasks (names, glob patterns or YAML files; local YAML tasks
    from ``include_path``) and write ``results_<date>.json`` and ``samples_<task>_<date>.jsonl``
    under ``out/<checkpoint>/``, as ``lm-eval run --output_path out --log_samples`` does; returns
    lm-eval's results dict (as written, without the samples)."""
    return evaluate_tasks(
        ckpt,
        tasks,
        out=out,
        include_path=include_path,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        device=device,
    ).results


def evaluate_tasks(
    ckpt: str | Path,
    tasks: list[str],
    *,
    out: Path,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 8,
    device: Any = "cpu",
    decode_threads: int | str | None = "auto",
) -> Harnessed:
    """``run_harness``, telling also where the files went."""
    _require_lm_eval()
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.utils import sanitize_model_name

    names = [tasks] if isinstance(tasks, str) else list(tasks)
    tasks = [t.strip() for name in names for t in name.split(",") if t.strip()]  # "a,b" as lm-eval reads it
    if not tasks:
        raise InputError("--tasks: give at least one lm-eval task name")
    from aunet.jobs.runs.directory import check_out

    check_out(Path(out), what="lm-eval's results")
    lm = make_lm(ckpt=ckpt, batch_size=batch_size, device=device, decode_threads=decode_threads)  # fails fast
    manager = _task_manager(tasks, include_path)
    tracker = EvaluationTracker(output_path=str(out))
    try:
        with _no_download_ping(), _data_files_beside_their_yaml():
            # No model_args: lm-eval only records them for a model object, and warns of a "chat
            # variant" when they contain "inst" or "chat" (a path may); get_model_info records
            # the checkpoint instead.
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=tasks,
                num_fewshot=num_fewshot,
                limit=limit,
                batch_size=batch_size,
                device=str(lm.device),
                task_manager=manager,
                log_samples=True,
                evaluation_tracker=tracker,
            )
    except ConnectionError as exc:  # a task's dataset is on the Hub, which this machine cannot reach
        raise InputError(
            f"{exc}: the task's data must be downloaded from the Hugging Face Hub (or be in its "
            "cache, with HF_DATASETS_OFFLINE=1)"
        ) from None
    except AunetError:
        raise
    except Exception as exc:
        if _raised_in_aunet(exc):
            raise  # aunet's own code was running: a bug, with its traceback
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise InputError(
            f"lm-eval could not run {', '.join(tasks)}: {type(exc).__name__}: {detail} (a malformed task: "
            "its YAML, templates or data; or a flag it cannot meet, such as a --num-fewshot above its "
            "examples)"
        ) from None
    # lm-eval names the folder after a `pretrained=`/`model=` argument, else a random name; here
    # the run's own folder name names it (with the checkpoint when one was named): never a path.
    name = results_name(lm.run.checkpoint) if lm.run is not None else "aunet"
    tracker.general_config_tracker.model_name = str(ckpt)
    tracker.general_config_tracker.model_name_sanitized = sanitize_model_name(name)
    samples = results.pop("samples")
    # As lm-eval's own `run` command saves them (lm_eval/_cli/run.py).
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    folder = Path(out) / tracker.general_config_tracker.model_name_sanitized
    results_file = folder / f"results_{tracker.date_id}.json"
    if not results_file.is_file():  # lm-eval logs a failed write and goes on: not here
        raise InputError(f"lm-eval could not write its results under {folder} (see its log above)")
    samples_files = {t: folder / f"samples_{t}_{tracker.date_id}.jsonl" for t in results["configs"]}
    return Harnessed(results, results_file, samples_files)


def results_name(checkpoint: Path) -> str:
    """The folder lm-eval's files go to under ``--out``: the run directory's name, and the
    checkpoint's when it is not the run's newest (``--ckpt ../x`` gives ``x``, never ``..__x``)."""
    import re

    from aunet.jobs.runs.checkpoint import CHECKPOINTS, latest_name

    checkpoint = checkpoint.resolve()
    if checkpoint.parent.name == CHECKPOINTS:
        run = checkpoint.parent.parent
        name = run.name if latest_name(run) == checkpoint.name else f"{run.name}-{checkpoint.name}"
    else:
        name = checkpoint.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "aunet"


def _raised_in_aunet(exc: BaseException) -> bool:
    """Whether aunet's own code was running when ``exc`` was raised (past ``evaluate_tasks``)."""
    modules = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name not in _PASS_THROUGH:  # aunet's wrappers around lm-eval's loading
            modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return any(m == "aunet" or m.startswith("aunet.") for m in modules[1:])


_PASS_THROUGH = ("load_yaml", "_beside")


@contextlib.contextmanager
def _data_files_beside_their_yaml() -> Iterator[None]:
    """Local tasks whose ``dataset_kwargs.data_files`` name paths relative to their YAML file.

    lm-eval reads such paths relative to the directory it runs in, so a task folder works from
    one directory only. Here a relative path that does not exist there is read relative to the
    task's YAML file instead (lm-eval's own reading comes first: no task changes meaning), so
    ``examples/harness`` runs from anywhere. Where lm-eval's task loader has another shape (a
    version aunet was not tested with), tasks are read as lm-eval reads them."""
    try:
        from lm_eval.tasks import _factory
    except ImportError:
        yield
        return
    original = getattr(_factory, "load_yaml", None)
    if original is None:
        yield
        return

    def load_yaml(path: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = original(path, *args, **kwargs)
        files = (cfg.get("dataset_kwargs") or {}).get("data_files") if isinstance(cfg, dict) else None
        if files is not None and isinstance(cfg.get("dataset_kwargs"), dict):
            cfg["dataset_kwargs"]["data_files"] = _beside(files, Path(path).expanduser().resolve().parent)
        return cfg

    _factory.load_yaml = load_yaml
    try:
        yield
    finally:
        _factory.load_yaml = original


def _beside(files: Any, folder: Path) -> Any:
    if isinstance(files, str):
        return (
            str(folder / files)
            if not Path(files).is_absolute() and not Path(files).exists() and (folder / files).exists()
            else files
        )
    if isinstance(files, list):
        return [_beside(f, folder) for f in files]
    if isinstance(files, dict):
        return {k: _beside(v, folder) for k, v in files.items()}
    return files


def _yaml_problems(include_path: Path) -> list[str]:
    """The YAML files of a task folder that lm-eval's index skips because they do not parse."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:
        return []
    paths = [include_path] if include_path.is_file() else sorted(include_path.rglob("*.yaml"))
    problems = []
    for path in paths:
        try:
            load_yaml(path, resolve_func=False, recursive=False)
        except Exception as exc:  # noqa: BLE001 - yaml's errors, and lm-eval's own
            where = str(exc).strip().replace("\n", " ")
            problems.append(f"{path}: not a readable lm-eval task ({type(exc).__name__}: {where[:300]})")
    return problems


def _task_manager(tasks: list[str], include_path: str | Path | None) -> Any:
    """lm-eval's TaskManager for ``tasks``, or an InputError naming those it does not know.

    Indexing lm-eval's own tasks (some 15,000) takes about ten seconds; tasks that are all plain
    tasks (not groups or tags, which may name built-in tasks) of ``include_path`` are loaded from
    an index of that folder alone, which gives the same tasks (the folder's take precedence)."""
    from lm_eval.tasks import TaskManager

    missing = [t for t in tasks if t.endswith((".yaml", ".yml")) and not Path(t).is_file()]
    if missing:
        raise InputError(f"--tasks: '{missing[0]}' does not exist (a task named by its YAML file)")
    if include_path is not None:
        if not Path(include_path).exists():
            raise InputError(f"--include-path: '{include_path}' does not exist")
        if Path(include_path).is_file():  # lm-eval indexes folders: the file's own folder holds it
            include_path = Path(include_path).parent
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(t in local.all_subtasks for t in tasks):
            return local
        problems = _yaml_problems(Path(include_path))
        if problems:  # lm-eval's index skips a file it cannot parse: say so, not "unknown task"
            raise InputError("\n".join([f"--include-path: {p}" for p in problems]))
    manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    unknown = [t for t in tasks if not (t.endswith(".yaml") and Path(t).is_file()) and not manager.match_tasks([t])]
    if unknown:
        hint = did_you_mean(unknown[0], manager.all_tasks) if len(unknown) == 1 else ""
        raise InputError(
            f"unknown lm-eval task{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}{hint} "
            "(`lm-eval ls tasks` lists the known ones; for local YAML tasks give "
            "--include-path DIR)"
        )
    return manager


@contextlib.contextmanager
def _no_download_ping() -> Iterator[None]:
    """The run without ``datasets``' download-count ping.

    A local task (``dataset_path: json`` with local ``data_files``) loads without any network,
    but for one thing: ``datasets`` sends a HEAD request to s3.amazonaws.com each time it loads a
    packaged builder such as ``json`` (a download count; 3 s timeout, failures ignored), which on
    a machine without a network only waits. It is turned off for the run, and only it:
    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are not set, since tasks whose data is on the Hub need
    the Hub (where it cannot be reached, ``datasets`` says so after its retries: an InputError)."""
    import datasets.config

    before = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = before


def metric_rows(results: dict) -> list[tuple[str, str, float, float | None]]:
    """(task, metric, value, stderr) of every metric in lm-eval's results, tasks and groups."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            name = metric if filt in ("", "none") else f"{metric} ({filt})"
            rows.append((task, name, float(value), float(stderr) if isinstance(stderr, (int, float)) else None))
    return rows


def format_table(results: dict) -> str:
    """The metrics as a small aligned table."""
    rows = [("task", "metric", "value", "stderr")]
    rows += [(t, m, f"{v:.4f}", "" if s is None else f"{s:.4f}") for t, m, v, s in metric_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}".rstrip() for r in rows
    )


__all__ = [
    "DEFAULT_GEN_BYTES",
    "LM_EVAL_MISSING",
    "Harnessed",
    "Scored",
    "cut_at_stop",
    "evaluate_tasks",
    "format_table",
    "lm_class",
    "make_lm",
    "metric_rows",
    "run_harness",
    "score_continuations",
    "score_documents",
]
