"""``aunet compare``: several specs trained for the same budget, evaluated on the same bytes.

The budget is training FLOPs (each spec gets the steps its own FLOPs per byte and bytes per step
allow, by the paper's accounting of ``aunet spec show``), training minutes (each its own training
time) or steps. The runs take turns (``aunet.jobs.experiments.turns``), so a shared machine's drift falls on
all alike; every turn ends with an evaluation on the first ``curve_bytes`` of the validation split
(not counted as training time), which draws the curves; the finished runs are evaluated on the
whole split, the same bytes for every model (a BPE model's token log-likelihood is summed and
divided by the bytes its tokens cover).

``DIR/compare.json`` holds one row per spec and the curves, ``DIR/compare.md`` the table, and
``DIR/bpb_vs_flops.png`` and ``DIR/bpb_vs_time.png`` the plots (matplotlib: ``pip install
'aunet[plot]'``; without it the JSON and Markdown are still written and a notice says why the
plots are not).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from aunet.core.convert import dump_spec
from aunet.core.errors import InputError
from aunet.core.spec import Spec
from aunet.jobs.data.corpus import Split, data_key

#: Validation bytes evaluated after every turn (the curves' points).
CURVE_BYTES = 32_768


@attrs.frozen
class Budget:
    flops: float | None = None
    minutes: float | None = None
    steps: int | None = None

    def describe(self) -> str:
        if self.flops is not None:
            return f"{self.flops:.3g} training FLOPs"
        return f"{self.minutes:g} minutes of training time" if self.minutes is not None else f"{self.steps:,} steps"


def bytes_per_step(spec: Spec) -> float:
    """Bytes one optimizer step reads: rows x positions, times bytes per token for BPE."""
    t = spec.train
    return t.batch_size * t.grad_accum * spec.model.context * spec.model.bytes_per_position


def _prepared(spec: Spec, data: str | Path | None, which: Split = Split.FINAL) -> Spec:
    """The spec with what its FLOPs per byte need filled in (a BPE spec's bytes per token)."""
    if spec.model.bpe and spec.model.tokenizer.bytes_per_token is None:
        from aunet.jobs.data.bpe import bytes_per_token, trained_tokenizer, with_bytes_per_token
        from aunet.jobs.data.corpus import load_corpus

        corpus = load_corpus(data, which)
        tokenizer = trained_tokenizer(spec.model.tokenizer, corpus)
        spec = with_bytes_per_token(spec, bytes_per_token(tokenizer, (d.data for d in corpus.train)))
    return spec


PLAN_FILE = "compare-plan.json"
WARMUP_SHARE = 0.1  # a run's warmup is at most this share of its steps


def _capped_warmup(name: str, spec: Spec, steps: dict[str, int] | int, quiet: bool) -> Spec:
    """``spec`` with its warmup cut to ``WARMUP_SHARE`` of its steps where it is longer: a short
    budget would otherwise spend most of a run (or all of it) below the peak learning rate, and
    runs of different specs would differ in that share (one rule for all, said on stderr)."""
    total = steps[name] if isinstance(steps, dict) else steps
    cap = max(1, int(total * WARMUP_SHARE))
    if spec.train.warmup <= cap:
        return spec
    if not quiet:
        print(
            f"aunet compare: {name}: warmup {spec.train.warmup} -> {cap} steps (at most {WARMUP_SHARE:.0%} of its "
            f"{total:,})",
            file=sys.stderr,
        )
    return attrs.evolve(spec, train=attrs.evolve(spec.train, warmup=cap))


def compare(
    specs: Sequence[Spec],
    *,
    budget: Budget,
    data: str | Path | None,
    out: Path,
    device: Any = "auto",
    slice_steps: int = 100,
    curve_bytes: int = CURVE_BYTES,
    quiet: bool = False,
    resume: bool = False,
    which: Split = Split.FINAL,
) -> dict[str, Any]:
    """Train, evaluate and report (module docstring); returns what ``compare.json`` holds.
    ``which`` is the split every run validates on (``tuning`` for choosing knobs).

    ``out/compare-plan.json`` records what is compared (the specs, the budget, the data, the
    turns) before the first step: with ``resume`` the same comparison continues from its runs'
    checkpoints (after Ctrl-C, a crash, or an error late in the report), and another one is
    refused. Each finished run's evaluation is kept beside it (``compare-row.json``), so a resumed
    report does not evaluate again."""
    from aunet.core.accounting import account
    from aunet.jobs.data.corpus import load_corpus, xz_bits_per_byte
    from aunet.jobs.experiments.turns import run_name, train_in_turns

    names = [run_name(s.name or f"spec{i}") for i, s in enumerate(specs)]
    if len(set(names)) != len(names):
        raise InputError(f"aunet compare: two specs have the same name ({', '.join(names)}); give each its own `name`")
    plan = {
        "specs": {n: dump_spec(s) for n, s in zip(names, specs)},
        "budget": attrs.asdict(budget),
        "data": data_key(data),
        "turn_steps": slice_steps,
        "curve_bytes": curve_bytes,
    }
    if which is not Split.FINAL:
        plan["split"] = which.value
    _claim(out, plan, resume)
    prepared = {n: _prepared(s, data, which) for n, s in zip(names, specs)}
    steps: dict[str, int] | int | None = budget.steps
    if budget.flops is not None:
        steps = {}
        for name, spec in prepared.items():
            per_step = account(spec).flops_per_byte * bytes_per_step(spec)
            steps[name] = max(1, int(budget.flops // per_step))
    if steps is not None:
        prepared = {name: _capped_warmup(name, spec, steps, quiet) for name, spec in prepared.items()}
    overrides = (
        f"train.eval.every={slice_steps}",
        f"train.eval.bytes={curve_bytes}",
        "train.sample.bytes=0",
        "train.eval.final_bytes=1",
        f"train.metrics.every={math.gcd(slice_steps, 10)}",
        f"train.data.split={which.value}",
    )  # every turn's end logged
    turns = train_in_turns(
        prepared,
        data=data,
        out=out,
        minutes=budget.minutes,
        steps=steps,
        slice_steps=slice_steps,
        device=device,
        quiet=quiet,
        overrides=overrides,
        on_turn=None if quiet else _announce,
    )
    corpus = load_corpus(data, which)
    validation = corpus.validation_bytes
    xz = xz_bits_per_byte(validation)
    rows, curves = [], {}
    for name in names:
        row, curve = _evaluate_run(turns.outs[name], name, corpus, curve_bytes, device, turns.turns[name])
        rows.append(row)
        curves[name] = curve
    report = {
        "budget": attrs.asdict(budget),
        "data": str(data) if data else "embedded",
        "split": which.value,
        "xz_bpb": xz,
        "curve_bytes": curve_bytes,
        "xz_curve_bpb": xz_bits_per_byte(validation[:curve_bytes]),
        "rows": rows,
        "curves": curves,
        "flops_formula": "the paper's accounting (aunet spec show: flops_per_byte) x bytes seen; "
        "flops_per_byte_packed: attention per training document and window",
    }
    from aunet.jobs.runtime.files import write_text

    write_text(out / "compare.json", json.dumps(report, indent=1))
    write_text(out / "compare.md", markdown(report, budget))
    report["plots"] = plot(report, out)
    write_text(out / "compare.json", json.dumps(report, indent=1))
    return report


def _claim(out: Path, plan: dict[str, Any], resume: bool) -> None:
    """``out`` for this comparison: new (or empty), or, with ``resume``, one that holds the same
    plan; ``compare-plan.json`` written before any training."""
    from aunet.jobs.runs.directory import check_out
    from aunet.jobs.runtime.files import write_text

    check_out(out, what="the comparison")
    path = out / PLAN_FILE
    if resume:
        if not path.is_file():
            raise InputError(
                f"--resume: '{out}' holds no comparison to resume (no {PLAN_FILE}); start one there without --resume"
            )
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"--resume: {path} is unreadable ({exc})") from None
        changed = [key for key in plan if before.get(key) != plan[key]]
        if changed:
            raise InputError(
                f"--resume: '{out}' holds another comparison ({', '.join(changed)} differ); give the same "
                "specs, budget, --data and --turn-steps, or a new --out"
            )
        return
    if out.exists() and any(out.iterdir()):
        hint = "; add --resume to continue the comparison in it" if path.is_file() else ""
        raise InputError(f"--out: '{out}' is not empty; give a new folder for the comparison{hint}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot create '{out}': {exc.strerror or exc}") from None
    write_text(path, json.dumps(plan, indent=1))


ROW_FILE = "compare-row.json"


def _evaluate_run(
    run_dir: Path, name: str, corpus: Any, curve_bytes: int, device: Any, turns: int
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A finished run's row and curve, evaluated on the validation split (kept in ``compare-row.json``
    beside the run, so a resumed report reads it instead of evaluating again)."""
    from aunet.core.accounting import account
    from aunet.jobs.data.packing import encode_documents
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runs import checkpoint
    from aunet.jobs.runs.directory import load_run
    from aunet.jobs.runtime.files import write_text

    kept = run_dir / ROW_FILE
    newest = checkpoint.latest_name(run_dir)
    try:
        saved = json.loads(kept.read_text(encoding="utf-8")) if kept.is_file() else None
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("checkpoint") == newest and isinstance(saved.get("row"), dict):
        return saved["row"], saved["curve"]
    loaded = load_run(run_dir, device=device)
    documents = encode_documents(corpus.validation, loaded.encoding)
    result = evaluate(loaded.model, loaded.encoding, documents, context=loaded.spec.model.context, batch_size=8)
    sizes = account(loaded.spec, documents=[len(d.data) for d in corpus.train])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    state = checkpoint.read_trainer_json(loaded.checkpoint)  # the last step's counters, logged or not
    last = {"bytes_seen": int(state["bytes_seen"]), "elapsed_s": float(state["elapsed"])}
    per_byte = sizes.flops_per_byte
    row = {
        "spec": name,
        "parameters": sizes.parameters,
        "flops_per_byte": per_byte,
        "flops_per_byte_packed": sizes.flops_per_byte_packed,
        "training_flops": per_byte * last["bytes_seen"],
        "bytes_seen": last["bytes_seen"],
        "steps": loaded.step,
        "warmup": loaded.spec.train.warmup,
        "wall_time_s": last["elapsed_s"],
        "bytes_per_s": last["bytes_seen"] / max(last["elapsed_s"], 1e-9),
        "val_bpb": result.bpb,
        "val_bytes": result.bytes,
        # Achieved on the validation split: a router's choices, a splitter's rule on this text.
        "bytes_per_segment": [round(k, 3) for k in result.bytes_per_segment],
        "turns": turns,
        "run": str(run_dir),
    }
    # The curve's last point: the finished run on the same first bytes as the turns' evaluations.
    head = evaluate(
        loaded.model,
        loaded.encoding,
        documents,
        context=loaded.spec.model.context,
        batch_size=8,
        limit_bytes=math.ceil(curve_bytes / loaded.encoding.bytes_per_position),
    )
    curve = _curve(records, per_byte) + [
        {"step": loaded.step, "flops": per_byte * last["bytes_seen"], "seconds": last["elapsed_s"], "val_bpb": head.bpb}
    ]
    write_text(kept, json.dumps({"checkpoint": loaded.checkpoint.name, "row": row, "curve": curve}))
    return row, curve


def _announce(name: str, summary: Any) -> None:
    losses = summary.losses
    loss = f", loss {losses[-1]:.4f}" if losses else ""
    print(
        f"aunet compare: {name} at step {summary.step}{loss}{'' if summary.interrupted else ' (done)'}", file=sys.stderr
    )


def _curve(records: list[dict[str, Any]], flops_per_byte: float) -> list[dict[str, float]]:
    """(training FLOPs, training seconds, validation bpb) at every evaluation of a run."""
    by_step = {r["step"]: r for r in records if "loss" in r}
    points = []
    for r in records:
        if "val_bpb" in r and not r.get("final") and r["step"] in by_step:
            t = by_step[r["step"]]
            points.append(
                {
                    "step": r["step"],
                    "flops": flops_per_byte * t["bytes_seen"],
                    "seconds": t["elapsed_s"],
                    "val_bpb": r["val_bpb"],
                }
            )
    return points


def markdown(report: dict[str, Any], budget: Budget) -> str:
    lines = [
        f"Budget: {budget.describe()}; validation bits per byte on {report['rows'][0]['val_bytes']:,} bytes "
        f"({report['data']}, {report.get('split', 'final')} split); xz -9e: {report['xz_bpb']:.4f}.",
        "",
        "| spec | parameters | FLOPs/byte | FLOPs/byte, packed | training FLOPs | bytes seen | steps | wall time "
        "| bytes/s | bytes per segment, levels 1.. | val bpb |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        segments = ", ".join(f"{k:.2f}" for k in r.get("bytes_per_segment", [])) or "-"
        lines.append(
            f"| {r['spec']} | {r['parameters'] / 1e6:.2f} M | {r['flops_per_byte']:.3g} | "
            f"{r['flops_per_byte_packed']:.3g} | {r['training_flops']:.3g} | "
            f"{r['bytes_seen']:,} | {r['steps']:,} | {r['wall_time_s'] / 60:.1f} min | {r['bytes_per_s']:,.0f} | "
            f"{segments} | {r['val_bpb']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], out: Path) -> list[str]:
    """The two PNG plots, or [] with a notice when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "aunet compare: note: matplotlib is not installed (pip install 'aunet[plot]'); wrote compare.json "
            "and compare.md without plots",
            file=sys.stderr,
        )
        return []
    try:
        return _draw(report, out, plt)
    except Exception as exc:  # noqa: BLE001 - a plot is a picture of compare.json: never worth the results
        print(
            f"aunet compare: note: the plots could not be drawn ({type(exc).__name__}: {exc}); compare.json and "
            "compare.md are written",
            file=sys.stderr,
        )
        return []


def _draw(report: dict[str, Any], out: Path, plt: Any) -> list[str]:
    written = []
    for key, label, name, log in (
        ("flops", "training FLOPs", "bpb_vs_flops.png", True),
        ("seconds", "training time (s)", "bpb_vs_time.png", False),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        for spec, points in report["curves"].items():
            xs = [p[key] for p in points]
            ys = [p["val_bpb"] for p in points]
            ax.plot(xs, ys, marker="o", markersize=3, label=spec)
        xz = report.get("xz_curve_bpb", report["xz_bpb"])  # on the curves' own bytes
        if math.isfinite(xz):
            ax.axhline(
                xz, color="grey", linestyle="--", linewidth=1, label=f"xz -9e (same {report['curve_bytes']:,} bytes)"
            )
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"validation bits per byte (first {report['curve_bytes']:,} bytes)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        written.append(name)
    return written


def load_specs(paths: Sequence[str]) -> list[Spec]:
    from aunet.jobs.config import load_spec

    return [load_spec(p) for p in paths]
