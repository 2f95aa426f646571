"""``aunet sweep``: iso-FLOP ladders, the paper's way of comparing architectures.

For each budget (training FLOPs, the paper's accounting), every architecture is trained at several
sizes (``scaling.scaled``: width and depth grown together) by one ``aunet compare`` of the whole
ladder, on the same bytes; the compute-optimal size of each budget is the one with the lowest
validation bits per byte. A saturating power law (``scaling.fit``) is fitted per architecture to
its compute-optimal points, and every pair of architectures gets the compute where their laws
cross, with a bootstrap interval (``scaling.bootstrap_crossover``).

``DIR/sweep-plan.json`` records the sweep before any training; ``DIR/budget-<F>/`` holds each
budget's comparison (its runs, ``compare.json``, plots); ``DIR/sweep.json`` and ``DIR/sweep.md``
the points, fits and crossovers; ``DIR/sweep.png`` the plot. A sweep stopped anywhere continues
with ``--resume``: finished budgets are read back, the one under way resumes from its runs'
checkpoints.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aunet.core.convert import dump_spec
from aunet.core.errors import InputError
from aunet.core.spec import Spec
from aunet.jobs.data.corpus import Split, data_key
from aunet.jobs.experiments import scaling

PLAN_FILE = "sweep-plan.json"


def budget_folder(out: Path, budget: float) -> Path:
    return out / f"budget-{budget:.3g}"


def _claim(out: Path, plan: dict[str, Any], resume: bool) -> None:
    """``out`` for this sweep: new or empty, or (``resume``) one holding the same plan."""
    path = out / PLAN_FILE
    if resume:
        if not path.is_file():
            raise InputError(f"--resume: {out} holds no sweep ({PLAN_FILE} is missing); start one without --resume")
        if json.loads(path.read_text(encoding="utf-8")) != plan:
            raise InputError(
                f"--resume: {out} holds another sweep (its specs, budgets or sizes differ); resume it with the "
                "same arguments, or give a new --out"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out: {out} is not empty; give a new folder, or --resume the sweep in it")
    from aunet.jobs.runtime.files import write_text

    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(plan, indent=1))


def sweep(
    specs: Sequence[Spec],
    *,
    budgets: Sequence[float],
    sizes: Sequence[float],
    data: str | Path | None,
    out: Path,
    device: Any = "auto",
    slice_steps: int = 100,
    resume: bool = False,
    quiet: bool = False,
    which: Split = Split.FINAL,
) -> dict[str, Any]:
    """Train the ladders, fit the laws, report (module docstring); returns ``sweep.json``'s dict.
    ``which``: the split every run validates on."""
    from aunet.jobs.experiments.compare import Budget, compare
    from aunet.jobs.runtime.files import write_text

    names = [s.name for s in specs]
    if len(set(names)) != len(names) or not all(names):
        raise InputError(f"aunet sweep: give every spec its own name (got {', '.join(map(repr, names))})")
    budgets, sizes = sorted(set(budgets)), sorted(set(sizes))
    plan = {
        "specs": {s.name: dump_spec(s) for s in specs},
        "budgets": budgets,
        "sizes": sizes,
        "data": data_key(data),
        "turn_steps": slice_steps,
    }
    if which is not Split.FINAL:
        plan["split"] = which.value
    _claim(out, plan, resume)
    runs = []
    for budget in budgets:
        folder = budget_folder(out, budget)
        ladder = [scaling.scaled(spec, size) for spec in specs for size in sizes]
        report = compare(
            ladder,
            budget=Budget(flops=budget),
            data=data,
            out=folder,
            device=device,
            slice_steps=slice_steps,
            quiet=quiet,
            resume=resume and (folder / "compare-plan.json").is_file(),
            which=which,
        )
        by_name = {row["spec"]: row for row in report["rows"]}
        for spec, size in itertools.product(specs, sizes):
            row = by_name[scaling.scaled(spec, size).name]
            runs.append(
                {
                    "arch": spec.name,
                    "size": size,
                    "budget": budget,
                    "training_flops": row["training_flops"],
                    "parameters": row["parameters"],
                    "val_bpb": row["val_bpb"],
                    "run": row["run"],
                }
            )
    result = {"budgets": budgets, "sizes": sizes, "split": which.value, "runs": runs, **laws(runs, names)}
    write_text(out / "sweep.json", json.dumps(result, indent=1))
    write_text(out / "sweep.md", markdown(result))
    result["plot"] = plot(result, out)
    write_text(out / "sweep.json", json.dumps(result, indent=1))
    return result


def laws(runs: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per architecture its compute-optimal points and law; per pair their crossover."""
    optimal: dict[str, list[dict[str, Any]]] = {}
    fits: dict[str, dict[str, float] | None] = {}
    no_law: dict[str, str] = {}
    points: dict[str, tuple[list[float], list[float]]] = {}
    for name in names:
        mine = [r for r in runs if r["arch"] == name]
        best = scaling.compute_optimal([(r["budget"], r["val_bpb"], r["size"]) for r in mine])
        chosen = [next(r for r in mine if r["budget"] == b and r["size"] == size) for b, (_, size) in best.items()]
        optimal[name] = chosen
        points[name] = ([r["training_flops"] for r in chosen], [r["val_bpb"] for r in chosen])
        try:
            law = scaling.fit(*points[name])
            fits[name] = {"e": law.e, "a": law.a, "alpha": law.alpha, "residual": law.residual}
        except ValueError as exc:  # fewer than three budgets, or a loss that does not fall
            fits[name] = None
            no_law[name] = str(exc)
    crossings = []
    for first, second in itertools.combinations(names, 2):
        if fits.get(first) is None or fits.get(second) is None:
            continue
        found = scaling.bootstrap_crossover(points[first], points[second])
        crossings.append(
            {
                "first": first,
                "second": second,
                "compute": found.compute,
                "median": found.median,
                "p5": found.low,
                "p95": found.high,
                "share_crossing": found.crossing,
                "resamples": found.resamples,
            }
        )
    return {"optimal": optimal, "fits": fits, "no_law": no_law, "crossovers": crossings}


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Budgets (training FLOPs): {', '.join(f'{b:.3g}' for b in result['budgets'])}; sizes: "
        f"{', '.join(f'x{s:g}' for s in result['sizes'])} (non-embedding parameters, width and depth together).",
        "",
        "| architecture | size | budget | training FLOPs | parameters | val bpb | compute-optimal |",
        "|---|---|---|---|---|---|---|",
    ]
    chosen = {(r["arch"], r["budget"], r["size"]) for rows in result["optimal"].values() for r in rows}
    for r in result["runs"]:
        mark = "yes" if (r["arch"], r["budget"], r["size"]) in chosen else ""
        lines.append(
            f"| {r['arch']} | x{r['size']:g} | {r['budget']:.3g} | {r['training_flops']:.3g} | "
            f"{r['parameters'] / 1e6:.2f} M | {r['val_bpb']:.4f} | {mark} |"
        )
    lines += ["", "| architecture | E | A | alpha | rms residual |", "|---|---|---|---|---|"]
    for name, law in result["fits"].items():
        if law is None:
            lines.append(f"| {name} | no law: {result['no_law'][name]} | | | |")
        else:
            lines.append(f"| {name} | {law['e']:.3f} | {law['a']:.3g} | {law['alpha']:.3f} | {law['residual']:.4f} |")
    lines += [
        "",
        "| first | second | crossover (all points) | bootstrap median | 5% | 95% | resamples crossing |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["crossovers"]:
        lines.append(
            f"| {c['first']} | {c['second']} | {_e(c['compute'])} | {_e(c['median'])} | {_e(c['p5'])} | "
            f"{_e(c['p95'])} | "
            + (f"{c['share_crossing']:.0%} of {c['resamples']}" if c["resamples"] else "no bootstrap: three budgets")
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], out: Path) -> str | None:
    """``sweep.png``: every run, the compute-optimal points, the fitted laws carried to 1e20 FLOPs
    and the crossovers below it (a dashed line, the bootstrap's 5-95% band shaded); None (and a
    notice) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import sys

        print("aunet sweep: matplotlib is not installed (pip install 'aunet[plot]'): no plot", file=sys.stderr)
        return None
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {}
    for name, rows in result["optimal"].items():
        mine = [r for r in result["runs"] if r["arch"] == name]
        line = ax.scatter([r["training_flops"] for r in mine], [r["val_bpb"] for r in mine], s=12, alpha=0.35)
        colors[name] = line.get_facecolor()[0]
        ax.scatter(
            [r["training_flops"] for r in rows], [r["val_bpb"] for r in rows], s=40, color=colors[name], label=name
        )
        law = result["fits"].get(name)
        if law is not None:
            c = np.logspace(np.log10(min(r["training_flops"] for r in mine)), 20, 200)
            ax.plot(c, law["e"] + law["a"] * c ** -law["alpha"], color=colors[name], lw=1)
    for c in result["crossovers"]:
        if c["compute"] is not None and c["compute"] <= 1e20:
            # The crossover of all points, and the 5th-95th percentiles of its bootstrap resamples.
            ax.axvline(c["compute"], color="grey", lw=0.6, ls="--")
            if c["p5"] is not None and c["p95"] is not None:
                ax.axvspan(c["p5"], min(c["p95"], 1e20), color="grey", alpha=0.08, lw=0)
            ax.annotate(
                f"{c['first']} = {c['second']}",
                (c["compute"], ax.get_ylim()[1]),
                rotation=90,
                fontsize=6,
                va="top",
                ha="right",
                color="grey",
            )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (the paper's accounting)")
    ax.set_ylabel("validation bits per byte")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "sweep.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
