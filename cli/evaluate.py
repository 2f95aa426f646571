"""``aunet eval``: bits per byte of a checkpoint beside ``xz -9e``, on its own data, a file or a suite."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import attrs

from aunet.cli.options import (
    Commands,
    positive_int,
    print_json,
    runtime_options,
)
from aunet.core.errors import InputError
from aunet.core.hookspecs import hookimpl
from aunet.jobs.config import Streaming
from aunet.jobs.inference.suites import suite_names
from aunet.jobs.runs.directory import run_data


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command("eval", help="validation bits per byte of a checkpoint, beside xz -9e")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--data", metavar="PATH", help="a corpus to evaluate, whole (default: the run's own data, its validation split)"
    )
    data.add_argument("--suite", metavar="NAME", choices=suite_names(), help="bits per byte on every text of a suite")
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="with --suite: only these texts (file stems or BCP 47 tags, comma-separated, e.g. eng,cmn_hans,tha)",
    )
    p.add_argument(
        "--split",
        choices=["all", "validation", "train", "tuning"],
        default=None,
        help="which documents: all (the default with --data), validation (the final split; the default for the run's "
        "own data), train, or tuning (the tuning split's validation documents)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="rows per forward (default 8)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    runtime_options(p)
    p.set_defaults(run=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from aunet.jobs.data.corpus import Split, fingerprint_changes, load_corpus, xz_bits_per_byte
    from aunet.jobs.data.packing import encode_documents
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runs.directory import load_run
    from aunet.jobs.runtime.devices import model_autocast
    from aunet.jobs.train.metrics import Progress

    run = load_run(args.ckpt, device=args.device)
    spec, model, ckpt = run.spec, run.model, run.checkpoint
    if args.suite:
        return _eval_suite(run, args)
    if args.only:
        raise InputError("--only applies with --suite")
    if args.data is None and (run.data.get("fingerprint") or {}).get("streamed"):
        return _eval_streamed(run, args)
    which = Split.TUNING if args.split == "tuning" else Split.FINAL
    if args.data is not None:
        corpus = load_corpus(args.data, which)
        split = args.split or "all"
    else:  # the run's own data, its validation split
        corpus = load_corpus(run_data(run), which)
        split = args.split or "validation"
        changes = fingerprint_changes(run.data.get("fingerprint") or {}, corpus.fingerprint) if run.data else []
        if changes and run.data.get("fingerprint"):
            print(
                f"aunet: note: the run's data changed since training ({'; '.join(changes[:3])}); "
                "evaluating on it as it is now",
                file=sys.stderr,
            )
    for notice in corpus.notices:
        print(f"aunet: note: {notice}", file=sys.stderr)
    chosen = {"all": corpus.documents, "validation": corpus.validation, "train": corpus.train}[
        "validation" if split == "tuning" else split
    ]
    docs = encode_documents(chosen, run.encoding)
    if not docs:
        raise InputError(f"the {split} split of {corpus.source} is empty")
    progress = Progress(sys.stderr)
    result = evaluate(
        model,
        run.encoding,
        docs,
        context=spec.model.context,
        batch_size=args.batch_size,
        progress=progress,
        autocast=model_autocast(model),
    )
    data = b"".join(d.data for d in chosen)
    xz = xz_bits_per_byte(data)
    xz_note = _xz_note(len(data))
    if args.json:
        print_json(
            {
                "checkpoint": str(ckpt),
                "spec": spec.name,
                "data": corpus.source,
                "split": split,
                "documents": [d.name for d in chosen],
                **result.to_json(),
                "xz_bpb": xz,
                **({"xz_note": xz_note} if xz_note else {}),
            }
        )
        return 0
    print(f"checkpoint: {ckpt} ({spec.name})")
    what = {"validation": "validation split", "tuning": "tuning split", "train": "training split"}.get(
        split, "whole file"
    )
    print(
        f"{split}: {result.bpb:.4f} bits per byte on {result.bytes:,} bytes of {corpus.source} "
        f"({what}, {len(chosen)} documents)"
    )
    print(f"xz -9e:     {xz:.4f} bits per byte on the same bytes")
    if xz_note:
        print(f"aunet: note: {xz_note}", file=sys.stderr)
    per = ", ".join(f"level {i}: {k:.2f}" for i, k in enumerate(result.bytes_per_segment, start=1))
    if per:
        print(f"bytes per segment: {per}")
    return 0


def _eval_streamed(run: Any, args: argparse.Namespace) -> int:
    """``aunet eval`` of a run that streamed its corpus: its validation documents read lazily, up
    to the bytes its own final evaluation read (``train.eval.final_bytes``; all by default)."""
    from aunet.jobs.data.corpus import fingerprint_changes
    from aunet.jobs.data.source import training_text
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runtime.devices import model_autocast
    from aunet.jobs.train.metrics import Progress

    if args.split not in (None, "validation"):
        raise InputError(
            f"--split {args.split}: the run streamed its corpus, which is evaluated on its validation "
            "split; give --data FILE to evaluate other text"
        )
    spec, model = run.spec, run.model
    path = run_data(run)
    text = training_text(path, attrs.evolve(spec.train.data, stream=Streaming.ON))
    changes = fingerprint_changes(run.data.get("fingerprint") or {}, text.fingerprint)
    if changes:
        print(
            f"aunet: note: the run's data changed since training ({'; '.join(changes[:3])}); evaluating on it as "
            "it is now",
            file=sys.stderr,
        )
    limit = spec.train.eval.final_bytes
    result = evaluate(
        model,
        run.encoding,
        text.validation(run.encoding, limit),
        context=spec.model.context,
        batch_size=args.batch_size,
        limit_bytes=limit,
        progress=Progress(sys.stderr),
        autocast=model_autocast(model),
    )
    xz = text.xz_bpb(limit)
    what = "the whole validation split" if limit is None else f"the first {limit:,} bytes of the validation split"
    if args.json:
        print_json(
            {
                "checkpoint": str(run.checkpoint),
                "spec": spec.name,
                "data": text.source,
                "split": "validation",
                "streamed": True,
                **result.to_json(),
                "xz_bpb": xz,
            }
        )
        return 0
    print(f"checkpoint: {run.checkpoint} ({spec.name})")
    print(f"validation: {result.bpb:.4f} bits per byte on {result.bytes:,} bytes of {text.source} ({what}, streamed)")
    print(f"xz -9e:     {xz:.4f} bits per byte on the same bytes")
    return 0


#: Below this many bytes, ``xz -9e``'s figure is mostly its container (about 60 bytes of headers).
XZ_MEANINGFUL = 10_000


def _xz_note(n_bytes: int) -> str | None:
    if n_bytes >= XZ_MEANINGFUL:
        return None
    return (
        f"xz's figure means little on {n_bytes:,} bytes: its container alone takes about 60 bytes "
        f"(480 bits), {480 / max(n_bytes, 1):.1f} bits per byte here"
    )


def _eval_suite(run: Any, args: argparse.Namespace) -> int:
    from aunet.jobs.data.corpus import Document, xz_bits_per_byte
    from aunet.jobs.data.packing import encode_documents
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.inference.suites import suite_texts
    from aunet.jobs.runtime.devices import model_autocast

    spec, model, ckpt = run.spec, run.model, run.checkpoint
    rows = []
    for text in suite_texts(args.suite, args.only):
        docs = encode_documents([Document(text.file, text.data)], run.encoding)
        result = evaluate(
            model,
            run.encoding,
            docs,
            context=spec.model.context,
            batch_size=args.batch_size,
            autocast=model_autocast(model),
        )
        rows.append(
            {
                "file": text.file,
                "bcp47": text.tag,
                "name": text.name,
                **({"group": text.group} if text.group else {}),
                **result.to_json(),
                "xz_bpb": xz_bits_per_byte(text.data),
            }
        )
    groups = suite_groups(rows)
    if args.json:
        print_json(
            {
                "checkpoint": str(ckpt),
                "spec": spec.name,
                "suite": args.suite,
                "languages": rows,
                **({"groups": groups} if groups else {}),
            }
        )
        return 0
    print(f"checkpoint: {ckpt} ({spec.name}), suite {args.suite}")
    print(f"{'file':<22} {'language':<34} {'bpb':>7} {'xz -9e':>7} {'bytes':>8}  bytes per segment")
    for r in rows:
        per = " ".join(f"{k:.2f}" for k in r["bytes_per_segment"])
        print(f"{r['file']:<22} {r['name'][:34]:<34} {r['bpb']:>7.3f} {r['xz_bpb']:>7.3f} {r['bytes']:>8,}  {per}")
    for g in groups:
        print(
            f"group {g['group']}: {g['bpb']:.3f} bits per byte over {g['bytes']:,} bytes of {g['texts']} texts "
            f"(mean of texts {g['mean_bpb']:.3f}; xz -9e {g['xz_bpb']:.3f})"
        )
    return 0


def suite_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group of a grouped suite (multilingual): bits per byte over all its bytes, the mean of
    its texts' bits per byte, and xz's (weighted by bytes)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if "group" not in r:
            continue
        g = out.setdefault(r["group"], {"group": r["group"], "bits": 0.0, "xz_bits": 0.0, "bytes": 0, "each": []})
        g["bits"] += r["bpb"] * r["bytes"]
        g["xz_bits"] += r["xz_bpb"] * r["bytes"]
        g["bytes"] += r["bytes"]
        g["each"].append(r["bpb"])
    return [
        {
            "group": g["group"],
            "bpb": g["bits"] / g["bytes"],
            "mean_bpb": sum(g["each"]) / len(g["each"]),
            "xz_bpb": g["xz_bits"] / g["bytes"],
            "bytes": g["bytes"],
            "texts": len(g["each"]),
        }
        for g in out.values()
        if g["bytes"]
    ]
