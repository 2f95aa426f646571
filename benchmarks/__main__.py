"""``python -m benchmarks NAME [--json]``: run one benchmark and print its figures."""

from __future__ import annotations

import argparse
import json
import platform
import sys

import benchmarks  # noqa: F401 - sets OMP_WAIT_POLICY before torch is imported

NAMES = (
    "splitters",
    "train-step",
    "recipe",
    "generate",
    "prefill",
    "script-experiment",
    "pooler-experiment",
    "udhr-eval",
    "attention",
    "gpu-check",
    "trust",
    "work",
    "claims",
    "decode-profile",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--json", action="store_true", help="one JSON object: machine info and records")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default: the benchmark's own)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training minutes per variant (the experiments: script 9.4, pooler 8)",
    )
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (attention, train-step, gpu-check)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="splitters, gpu-check, claims, generate, prefill, decode-profile: tiny sizes, to check the script runs",
    )
    parser.add_argument("--out", default=None, help="claims: where its runs and tables go (run again to resume)")
    parser.add_argument(
        "--prompt-bytes", type=int, default=None, help="generate: bytes per prompt (default 512; at most 990)"
    )
    parser.add_argument(
        "--rows", default=None, help="generate, decode-profile: numbers of rows, comma-separated (default 1,16,64)"
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be 1 or more, got {args.rounds}")
    module = __import__(f"benchmarks.{args.name.replace('-', '_')}", fromlist=["run"])
    experiments = ("script-experiment", "pooler-experiment")
    if args.rounds is not None and args.name in experiments:
        parser.error(f"--rounds does not apply to {args.name} (one training run per variant)")
    kwargs = {} if args.rounds is None else {"rounds": args.rounds}
    if args.minutes is not None:
        if args.name not in experiments:
            parser.error("--minutes applies to the experiments only")
        kwargs["minutes"] = args.minutes
    if args.device is not None:
        if args.name not in ("attention", "train-step", "gpu-check"):
            parser.error("--device applies to attention, train-step and gpu-check")
        kwargs["device"] = args.device
    if args.smoke:
        if args.name not in ("splitters", "gpu-check", "claims", "generate", "prefill", "decode-profile"):
            parser.error("--smoke applies to splitters, gpu-check, claims, generate, prefill and decode-profile only")
        kwargs["smoke"] = True
    if args.out is not None:
        if args.name != "claims":
            parser.error("--out applies to claims only")
        kwargs["out"] = args.out
    if args.prompt_bytes is not None:
        if args.name != "generate":
            parser.error("--prompt-bytes applies to generate only")
        from benchmarks.generate import check_prompt

        try:
            check_prompt(args.prompt_bytes)
        except ValueError as error:
            parser.error(f"--prompt-bytes: {error}")
        kwargs["prompt"] = args.prompt_bytes
    if args.rows is not None:
        if args.name not in ("generate", "decode-profile"):
            parser.error("--rows applies to generate and decode-profile only")
        kwargs["batches"] = _numbers_of_rows(parser, args.rows)
    records = module.run(**kwargs)
    if args.json:
        machine = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
        }
        json.dump({"benchmark": args.name, "machine": machine, "records": records}, sys.stdout, indent=1)
        print()
    else:
        print(module.report(records))
    return 0


def _numbers_of_rows(parser: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    """``--rows 1,16``: the numbers of rows, each 1 or more; argparse's one-line error otherwise."""
    try:
        rows = tuple(int(part) for part in text.split(","))
    except ValueError:
        rows = ()
    if not rows or min(rows) < 1:
        parser.error(f"--rows must be numbers of rows of 1 or more, comma-separated (like 1,16,64), got {text!r}")
    return rows


if __name__ == "__main__":
    sys.exit(main())
