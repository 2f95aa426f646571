"""``aunet generate``: continue prompts with a trained model, streaming one, batching several."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aunet.cli.options import (
    MAX_COUNT,
    Commands,
    non_negative_float,
    number,
    positive_float,
    positive_int,
    print_json,
    runtime_options,
    seed,
)
from aunet.core.errors import InputError
from aunet.core.hookspecs import hookimpl


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command("generate", help="continue a prompt with a trained model, streaming the text")
    p.add_argument(
        "--ckpt", required=True, metavar="DIR", help="a run directory (its newest checkpoint) or a checkpoint"
    )
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="a text to continue (default: empty, start from BOS); repeat it for several prompts, decoded as one batch",
    )
    prompts.add_argument(
        "--prompts",
        metavar="FILE",
        help="prompts from a file, decoded as one batch: one per line, "
        'or a .jsonl file of strings or of objects with a "prompt" (or "text") field',
    )
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="STR",
        help="end a row once it produces STR (kept in the output); repeatable. Write a newline as $'\\n' in bash",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per prompt: prompt, text (the new bytes "
        "as UTF-8, invalid bytes replaced), and why the row ended",
    )
    p.add_argument("--max-bytes", type=positive_int, default=200, metavar="N", help="new bytes at most (default 200)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="N",
        help="rows decoded together when there are several prompts; a row that finishes takes the "
        "next waiting prompt (default 64)",
    )
    p.add_argument("--temperature", type=non_negative_float, default=0.7, metavar="T", help="0 is greedy (default 0.7)")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K", help="sample among the K likeliest")
    p.add_argument("--top-p", type=positive_float, default=None, metavar="P", help="nucleus sampling")
    p.add_argument("--seed", type=seed, default=0, metavar="S", help="sampling seed, 0 to 2^63 - 1 (default 0)")
    p.add_argument(
        "--levels",
        choices=("splitter", "predicted"),
        default="splitter",
        help="where new bytes' levels come from: the spec's splitters (default) or the model's "
        "level head (a model trained with model.level_loss > 0)",
    )
    p.add_argument(
        "--step-mode",
        choices=("eager", "static", "compiled"),
        default=None,
        help="how decoding steps run: eager (each level computes only its rows and used cache slots), "
        "static (fixed shapes) or compiled (torch.compile, seconds per graph the first time); "
        "default: the fastest measured on the device, eager on CPU",
    )
    p.add_argument(
        "--prefill-chunk",
        type=number(int, 0, strict=False, maximum=MAX_COUNT),
        default=None,
        metavar="N",
        help="prefill prompts N positions at a time, which bounds the prefill's attention masks and "
        "activations by N rather than the prompt (the same logits to float rounding); 0: whole prompts; "
        "default: 256 on a CPU, where it measures faster, whole on a GPU and for routed models",
    )
    runtime_options(p)
    p.set_defaults(run=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    import codecs
    import warnings

    from aunet.jobs.inference.generate import check_levels_source, check_prefill_chunk, generate, read_prompts
    from aunet.jobs.runtime.devices import default_decode_threads

    if args.top_p is not None and args.top_p > 1:
        raise InputError(f"--top-p must be at most 1, got {args.top_p}")
    stops = [s.encode("utf-8", "surrogateescape") for s in args.stop]
    if any(not s for s in stops):
        raise InputError("--stop: an empty string would end every row at once; give at least one character")
    prompts = (
        read_prompts(args.prompts)
        if args.prompts is not None
        else [p.encode("utf-8", "surrogateescape") for p in args.prompt or [""]]
    )
    from aunet.jobs.runs.directory import load_run

    run = load_run(args.ckpt, device=args.device)
    model = run.model
    check_levels_source(model, args.levels)  # before any prompt is echoed
    try:
        check_prefill_chunk(model, args.prefill_chunk)
    except ValueError as err:
        raise InputError(f"--prefill-chunk: {err}") from None
    device = next(model.parameters()).device
    rows = min(len(prompts), args.batch_size)
    threads = default_decode_threads(rows, device) if args.threads == "auto" else None
    options = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "stop": stops,
        "threads": threads,
        "levels": args.levels,
        "encoding": run.encoding,
        "step_mode": args.step_mode,
        "prefill_chunk": args.prefill_chunk,
    }
    out = sys.stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        if len(prompts) == 1 and not args.json:  # one prompt: streamed as it is decoded
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")
            out.write(text.decode(prompts[0]))  # invalid UTF-8 is shown as U+FFFD, whatever the terminal's encoding
            generate(
                model,
                prompts,
                args.max_bytes,
                on_bytes=lambda row, b: (out.write(text.decode(b)), out.flush()),
                **options,
            )
            out.write(text.decode(b"", final=True) + "\n")
        else:
            # Rows that finish take the next waiting prompt (continuous batching): the batch
            # stays full until the prompts run out.
            new = generate(model, prompts, args.max_bytes, batch_size=args.batch_size, **options)
            for i, (prompt, produced) in enumerate(zip(prompts, new)):
                if args.json:
                    print_json(
                        {
                            "index": i,
                            "prompt": prompt.decode("utf-8", "replace"),
                            "text": produced.decode("utf-8", "replace"),
                            "bytes": len(produced),
                            "ended": _ending(produced, stops, args.max_bytes),
                        }
                    )
                else:
                    out.write(f"--- {i + 1}/{len(prompts)} ---\n")
                    out.write((prompt + produced).decode("utf-8", "replace") + "\n")
            out.flush()
    for w in caught:
        print(f"aunet: note: {w.message}", file=sys.stderr)
    return 0


def _ending(produced: bytes, stops: Sequence[bytes], max_bytes: int) -> str:
    """Why a row ended: ``stop`` (a stop string), ``length`` (``--max-bytes``) or ``eos``."""
    if any(produced.endswith(s) for s in stops):
        return "stop"
    return "length" if len(produced) >= max_bytes else "eos"
