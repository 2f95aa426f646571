"""The paper's four claims at a scale a CPU can run: ``python -m benchmarks claims --out DIR``.

Five architectures, the shipped CPU specs: flat bytes (``byte-tiny``), BPE with a tokenizer
trained on the training split (``bpe-tiny``, in-domain) and on other English text
(``bpe-ood-tiny``, out-of-domain), AU-Net 2 and AU-Net 3. Stages, each kept in DIR and read back
when the benchmark is run again (an interrupted stage resumes from its runs' checkpoints):

1. ``tune/``: at the middle budget and the middle size, one ``aunet compare --grid`` on the
   **tuning split** (validation documents i % 10 == 4 from the training side; the final ones are
   never read): the same three learning rates for every architecture, two vocabulary sizes for
   each BPE model, and per-level learning-rate multipliers for the AU-Nets (a first, wider search
   of 2026-12-06 put 1,024 ids last for both tokenizers and 3e-3 last for every model, so the grid
   starts at 6e-3 and keeps 2,048 and 4,096 ids). The chosen values are applied to the shipped
   specs (``specs/tuned/``).
2. ``multilingual/``: AU-Net 2 against BPE (its tokenizer trained on the same mix) at the middle
   size and the largest budget on ``embedded:multilingual``, each scored by ``aunet eval --suite
   multilingual`` (bits per byte of seen, low-resource and held-out languages).
3. ``sweep/``: ``aunet sweep`` of the tuned specs at every budget and size (the final split).
4. ``suites/``: the character-level and robustness suites (``aunet harness --tasks char,robust``)
   and the multilingual suite (``aunet eval --suite multilingual``: every UDHR language unseen, as
   these runs read English only) on each architecture's compute-optimal run of the largest budget.

``claims.md`` and ``claims.json`` gather the tables; ``sweep/sweep.png``, ``suites.png`` and
``multilingual.png`` are the plots. ``--smoke`` runs the same stages at toy budgets and sizes with
a few items per task, to check the script. One seed throughout.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ARCHS = ("byte-tiny", "bpe-tiny", "bpe-ood-tiny", "aunet2-tiny", "aunet3-tiny")
BUDGETS = (3e11, 1e12, 3e12)
# Widths x 1/5, 1/3 and 1/2 of the shipped specs, depths too, rounded to whole heads and layers:
# chosen so that every architecture gets three distinct models (x1/64 and x1/27 round to the same
# AU-Net 3); the middle one is the size tuning and the multilingual run use.
SIZES = (1 / 125, 1 / 27, 1 / 8)
GRID = (
    "train.lr=6e-3,1.2e-2,2.4e-2",
    "bpe-tiny:model.tokenizer.vocab_size=2048,4096",
    "bpe-ood-tiny:model.tokenizer.vocab_size=2048,4096",
    "aunet2-tiny:train.level_lr=[1,1],[2,1]",
    "aunet3-tiny:train.level_lr=[1,1,1],[2,1,1]",
)
MULTILINGUAL = ("aunet2-tiny", "bpe-tiny")
SMOKE = {"budgets": (2e9, 4e9, 8e9), "sizes": (1 / 64, 1 / 27, 1 / 8), "limit": "5"}


def aunet(*args: str, cwd: Path, log: Path, stdout: Path | None = None) -> None:
    """``aunet ARGS`` in a process of its own, its output appended to ``log`` (standard output to
    ``stdout`` when given); fails loudly."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    started = time.time()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ aunet {' '.join(args)}\n")
        out.flush()
        with stdout.open("w", encoding="utf-8") if stdout else open(os.devnull, "w") as captured:
            done = subprocess.run(
                [sys.executable, "-m", "aunet", *args],
                cwd=cwd,
                stdout=captured if stdout else out,
                stderr=out,
                env=env,
            )
        out.write(f"# exit {done.returncode} after {time.time() - started:.0f} s\n")
    if done.returncode != 0:
        raise SystemExit(f"claims: `aunet {' '.join(args)}` failed (exit {done.returncode}); see {log}")


def scored(path: Path, run: str, out: Path, log: Path) -> dict[str, Any]:
    """``aunet eval --suite multilingual --json`` of ``run``, kept in ``path`` (read back when there)."""
    if not path.is_file():
        partial = path.with_suffix(".partial")
        aunet("eval", "--ckpt", run, "--suite", "multilingual", "--json", cwd=out, log=log, stdout=partial)
        partial.replace(path)
    return json.loads(path.read_text(encoding="utf-8"))


def _resume(folder: Path, plan: str) -> tuple[str, ...]:
    return ("--resume",) if (folder / plan).is_file() else ()


def write_specs(folder: Path, specs: dict[str, Any]) -> list[str]:
    from aunet.core.convert import dump_spec

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, spec in specs.items():
        path = folder / f"{name}.toml"
        path.write_text(dump_spec(spec), encoding="utf-8")
        paths.append(str(path))
    return paths


def tune(out: Path, budget: float, size: float, log: Path) -> dict[str, Any]:
    """Stage 1: the grid on the tuning split; the shipped specs with the chosen values."""
    import attrs

    from aunet.jobs.config import load_spec, load_spec_with_overrides
    from aunet.jobs.experiments.scaling import scaled

    folder = out / "tune"
    choices_file = folder / "tuned" / "choices.json"
    if not choices_file.is_file():
        mid = {a: attrs.evolve(scaled(load_spec(a), size), name=a) for a in ARCHS}
        paths = write_specs(out / "specs" / "tune", mid)
        grids = [arg for g in GRID for arg in ("--grid", g)]
        aunet(
            "compare",
            *paths,
            "--flops",
            f"{budget:g}",
            "--split",
            "tuning",
            *grids,
            "--out",
            str(folder),
            *_resume(folder, "compare-plan.json"),
            cwd=out,
            log=log,
        )
    choices = json.loads(choices_file.read_text(encoding="utf-8"))["specs"]
    tuned = {a: load_spec_with_overrides(a, choices[a]["best"]["overrides"]) for a in ARCHS}
    write_specs(out / "specs" / "tuned", tuned)
    return choices


def multilingual(out: Path, budget: float, size: float, log: Path) -> dict[str, Any]:
    """Stage 2: AU-Net 2 and BPE on the multilingual mix, each scored by language group."""
    import attrs

    from aunet.jobs.config import load_spec
    from aunet.jobs.experiments.scaling import scaled

    folder = out / "multilingual"
    if not (folder / "compare.json").is_file():
        specs = {
            a: attrs.evolve(scaled(load_spec(out / "specs" / "tuned" / f"{a}.toml"), size), name=a)
            for a in MULTILINGUAL
        }
        paths = write_specs(out / "specs" / "multilingual", specs)
        aunet(
            "compare",
            *paths,
            "--flops",
            f"{budget:g}",
            "--data",
            "embedded:multilingual",
            "--out",
            str(folder),
            *_resume(folder, "compare-plan.json"),
            cwd=out,
            log=log,
        )
    report = json.loads((folder / "compare.json").read_text(encoding="utf-8"))
    groups = {row["spec"]: scored(folder / f"{row['spec']}.suite.json", row["run"], out, log) for row in report["rows"]}
    return {"compare": report, "suites": groups}


def sweep(out: Path, budgets: tuple[float, ...], sizes: tuple[float, ...], log: Path) -> dict[str, Any]:
    """Stage 3: the iso-FLOP ladders of the tuned specs on the final split."""
    folder = out / "sweep"
    if not (folder / "sweep.json").is_file():
        paths = [str(out / "specs" / "tuned" / f"{a}.toml") for a in ARCHS]
        aunet(
            "sweep",
            *paths,
            "--budgets",
            ",".join(f"{b:g}" for b in budgets),
            "--sizes",
            ",".join(f"{s:.6g}" for s in sizes),
            "--out",
            str(folder),
            *_resume(folder, "sweep-plan.json"),
            cwd=out,
            log=log,
        )
    return json.loads((folder / "sweep.json").read_text(encoding="utf-8"))


def suites(out: Path, result: dict[str, Any], limit: str | None, log: Path) -> dict[str, Any]:
    """Stage 4: the character-level and robustness suites on each compute-optimal run of the
    largest budget."""
    top = max(result["budgets"])
    scores = {}
    for arch in ARCHS:
        runs = [r for r in result["runs"] if r["arch"] == arch and r["budget"] == top]
        best = min(runs, key=lambda r: r["val_bpb"])
        folder = out / "suites" / arch
        if not glob.glob(str(folder / "*" / "results_*.json")):
            extra = ("--limit", limit) if limit else ()
            aunet(
                "harness",
                "--ckpt",
                best["run"],
                "--tasks",
                "char,robust",
                "--out",
                str(folder),
                *extra,
                cwd=out,
                log=log,
            )
        found = max(glob.glob(str(folder / "*" / "results_*.json")))
        results = json.loads(Path(found).read_text(encoding="utf-8"))["results"]
        # The same run on the multilingual suite: every UDHR language unseen (trained on English).
        groups = scored(folder / "multilingual.json", best["run"], out, log)["groups"]
        scores[arch] = {
            "run": best["run"],
            "size": best["size"],
            "val_bpb": best["val_bpb"],
            "results": results,
            "multilingual": groups,
        }
    return scores


def _metric(results: dict[str, Any], task: str, name: str) -> tuple[float, float]:
    entry = results.get(task, {})
    return entry.get(f"{name},none", float("nan")), entry.get(f"{name}_stderr,none", float("nan"))


def markdown(record: dict[str, Any]) -> str:
    """claims.md: one table per claim."""
    lines = [f"# The paper's claims at CPU scale ({record['date']}, {record['machine']})", ""]
    lines += ["## Tuning (tuning split; middle budget and size)", ""]
    from aunet.jobs.experiments.grid import markdown as grid_markdown

    lines += grid_markdown(record["tune"]).strip("\n").splitlines()
    sweep = record["sweep"]
    lines += ["", "## Iso-FLOP ladders (final validation split)", ""]
    lines += ["| spec | " + " | ".join(f"{b:.3g} FLOPs" for b in sweep["budgets"]) + " |"]
    lines += ["|---|" + "---|" * len(sweep["budgets"])]
    for arch in ARCHS:
        cells = []
        for b in sweep["budgets"]:
            runs = [r for r in sweep["runs"] if r["arch"] == arch and r["budget"] == b]
            best = min(runs, key=lambda r: r["val_bpb"])
            cells.append(f"{best['val_bpb']:.4f} (x{best['size']:.3g}, {best['parameters'] / 1e6:.2f} M)")
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    if record.get("suites"):
        suites_ = record["suites"]
        tasks = sorted({t for s in suites_.values() for t in s["results"] if t.startswith("char_")})
        lines += ["", "## Character-level suite (accuracy, +- standard error)", ""]
        lines += ["| task | " + " | ".join(suites_) + " |", "|---|" + "---|" * len(suites_)]
        for task in [*tasks, "char"]:
            cells = [_metric(s["results"], task, "acc") for s in suites_.values()]
            lines.append(f"| {task} | " + " | ".join(f"{a:.3f} +- {e:.3f}" for a, e in cells) + " |")
        lines += ["", "## Robustness suite (bits per byte of the right ending; accuracy)", ""]
        lines += ["| variant | " + " | ".join(suites_) + " |", "|---|" + "---|" * len(suites_)]
        for variant in ("clean", "space", "midword", "typo", "upper", "ascii"):
            task = f"robust_{variant}"
            cells = []
            for s in suites_.values():
                bits, _ = _metric(s["results"], task, "bits_per_byte")
                acc, _ = _metric(s["results"], task, "acc")
                cells.append(f"{bits:.3f}; {acc:.3f}")
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines += ["", "## English-only runs on the multilingual suite (bits per byte by group)", ""]
        lines += ["| group | " + " | ".join(suites_) + " |", "|---|" + "---|" * len(suites_)]
        for group in [g["group"] for g in next(iter(suites_.values()))["multilingual"]]:
            cells = [next(g for g in s["multilingual"] if g["group"] == group)["bpb"] for s in suites_.values()]
            lines.append(f"| {group} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    if record.get("multilingual"):
        multi = record["multilingual"]["suites"]
        lines += ["", "## Multilingual mix (final split; bits per byte by group)", ""]
        names = list(multi)
        lines += ["| group | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        groups = [g["group"] for g in multi[names[0]]["groups"]]
        for group in groups:
            cells = [next(g for g in multi[n]["groups"] if g["group"] == group) for n in names]
            lines.append(f"| {group} | " + " | ".join(f"{c['bpb']:.3f} ({c['texts']} texts)" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plots(record: dict[str, Any], folder: Path) -> list[str]:
    """``suites.png`` (character-level accuracy per task; robustness: bits per byte of each
    perturbation over the clean ending's) and ``multilingual.png`` (bits per byte per group)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("claims: matplotlib is not installed (pip install 'aunet[plot]'): no plots", file=sys.stderr)
        return []
    import numpy as np

    written = []
    suites_ = record.get("suites") or {}
    if suites_:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
        tasks = sorted({t for s in suites_.values() for t in s["results"] if t.startswith("char_")})
        variants = ("space", "midword", "typo", "upper", "ascii")
        width = 0.8 / len(suites_)
        for i, (arch, s) in enumerate(suites_.items()):
            acc = [_metric(s["results"], t, "acc") for t in tasks]
            x = np.arange(len(tasks)) + i * width
            left.bar(x, [a for a, _ in acc], width, yerr=[e for _, e in acc], label=arch, capsize=1.5)
            clean, _ = _metric(s["results"], "robust_clean", "bits_per_byte")
            ratio = [_metric(s["results"], f"robust_{v}", "bits_per_byte")[0] / clean - 1 for v in variants]
            right.bar(np.arange(len(variants)) + i * width, [100 * r for r in ratio], width, label=arch)
        left.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, [t.removeprefix("char_") for t in tasks], fontsize=7)
        left.set_ylabel("accuracy (+- standard error)")
        left.set_title("character-level suite", fontsize=9)
        left.legend(fontsize=7)
        right.set_xticks(np.arange(len(variants)) + 0.4 - width / 2, variants, fontsize=7)
        right.set_ylabel("% more bits per byte than the clean ending")
        right.set_title("robustness suite", fontsize=9)
        right.axhline(0, color="black", lw=0.5)
        fig.tight_layout()
        fig.savefig(folder / "suites.png", dpi=120)
        plt.close(fig)
        written.append(str(folder / "suites.png"))
    multi = (record.get("multilingual") or {}).get("suites") or {}
    if multi:
        names = list(multi)
        groups = [g["group"] for g in multi[names[0]]["groups"]]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            bpb = [next(g["bpb"] for g in multi[name]["groups"] if g["group"] == group) for group in groups]
            ax.bar(np.arange(len(groups)) + i * width, bpb, width, label=name)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
        ax.set_ylabel("validation bits per byte")
        ax.set_title("trained on the multilingual mix", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "multilingual.png", dpi=120)
        plt.close(fig)
        written.append(str(folder / "multilingual.png"))
    return written


def run(out: str | None = None, smoke: bool = False) -> list[dict[str, Any]]:
    import platform

    if out is None:
        raise SystemExit("claims: give --out DIR (where the runs and tables go; run again to resume)")
    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "claims.log"
    budgets = SMOKE["budgets"] if smoke else BUDGETS
    sizes = SMOKE["sizes"] if smoke else SIZES
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "budgets": budgets,
        "sizes": sizes,
    }
    record["tune"] = tune(folder, budgets[1], sizes[1], log)
    record["multilingual"] = multilingual(folder, budgets[-1], sizes[1], log)
    record["sweep"] = sweep(folder, budgets, sizes, log)
    record["suites"] = suites(folder, record["sweep"], SMOKE["limit"] if smoke else None, log)
    (folder / "claims.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    (folder / "claims.md").write_text(markdown(record), encoding="utf-8")
    record["plots"] = plots(record, folder)
    return [record]


def report(records: list[dict[str, Any]]) -> str:
    return markdown(records[0])
