"""What a scan leaves in its folder: trials.csv, pareto.csv, pareto.png and summary.md, all from the study.

The Pareto front is taken over completed trials that meet every constraint; a trial off the front loses its
checkpoints (metrics.json, model.onnx and graph.npz stay: enough to export firmware from any trial).
"""

from __future__ import annotations

import csv
import io
import shlex
import shutil
from pathlib import Path

from edgeann.files import atomic_write
from edgeann.scan.space import _tidy
from edgeann.scan.study import Scan

METRIC_COLUMNS = ["accuracy", "auc", "sparsity"]


def trial_rows(scan: Scan, study) -> list[dict]:
    """One row per trial (WAITING ones, queued re-runs not started yet, are left out)."""
    from optuna.trial import TrialState

    space, rows = scan.space, []
    costs = space.costs()
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING:
            continue
        measured = t.user_attrs.get("measured", {})
        violations = t.user_attrs.get("constraints", [])
        row = {"trial": t.number, "state": t.state.name}
        row.update({key: _tidy(t.params[key]) if isinstance(t.params.get(key), float) else t.params.get(key, "")
                    for key in space.parameters})
        row.update({m: measured.get(m, "") for m in [*METRIC_COLUMNS, *costs]})
        row.update({
            "onnx_exact": t.user_attrs.get("onnx_exact", ""),
            "feasible": (all(v <= 0 for v in violations) if t.state == TrialState.COMPLETE else ""),
            "seconds": t.user_attrs.get("seconds", ""),
            "run_dir": t.user_attrs.get("run_dir", ""),
            "note": t.user_attrs.get("error", f"re-run of trial {t.user_attrs['retry_of']}" if "retry_of" in t.user_attrs else ""),
        })
        rows.append(row)
    return rows


def pareto_front(scan: Scan, rows: list[dict]) -> list[dict]:
    """The completed, feasible trials no other such trial dominates (at least as good in every objective,
    better in one)."""
    sign = {o.name: (1 if o.direction == "maximize" else -1) for o in scan.space.objectives}
    candidates = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"] is True]

    def key(r):
        return [sign[n] * float(r[n]) for n in sign]

    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [r for r in candidates if not any(dominates(key(o), key(r)) for o in candidates if o is not r)]


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_outputs(scan: Scan, study, command: str) -> dict:
    """Write every output of the scan folder; returns {"rows", "pareto"}."""
    rows = trial_rows(scan, study)
    front = pareto_front(scan, rows)
    on_front = {r["trial"] for r in front}
    for r in rows:
        r["pareto"] = r["trial"] in on_front
    columns = list(rows[0]) if rows else ["trial", "state"]
    atomic_write(scan.folder / "trials.csv", _csv_text(rows, columns))
    atomic_write(scan.folder / "pareto.csv", _csv_text(sorted(front, key=lambda r: r["trial"]), columns))
    plot_front(scan, rows, scan.folder / "pareto.png")
    atomic_write(scan.folder / "summary.md", summary_markdown(scan, rows, front, command))
    for r in rows:
        if r["state"] == "COMPLETE" and not r["pareto"]:
            shutil.rmtree(scan.run_dir(r["trial"]) / "checkpoints", ignore_errors=True)
    return {"rows": rows, "pareto": front}


def plot_front(scan: Scan, rows: list[dict], path: Path) -> Path:
    """Accuracy (the first maximized objective) against each minimized one; infeasible trials grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = scan.space.objectives
    quality = next((o.name for o in objectives if o.direction == "maximize"), "accuracy")
    costs = [o.name for o in objectives if o.direction == "minimize"] or scan.space.costs()
    done = [r for r in rows if r["state"] == "COMPLETE"]
    fig, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4.2), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        feasible = [r for r in done if r["feasible"] is True]
        infeasible = [r for r in done if r["feasible"] is not True]
        ax.scatter([float(r[cost]) for r in infeasible], [float(r[quality]) for r in infeasible], color="0.75",
                   label="infeasible", zorder=2)
        ax.scatter([float(r[cost]) for r in feasible], [float(r[quality]) for r in feasible], color="C0",
                   label="feasible", zorder=3)
        front = sorted((r for r in feasible if r["pareto"]), key=lambda r: float(r[cost]))
        if front:
            ax.step([float(r[cost]) for r in front], [float(r[quality]) for r in front], where="post", color="C3",
                    label="Pareto front", zorder=4)
            for r in front:
                ax.annotate(str(r["trial"]), (float(r[cost]), float(r[quality])), fontsize=8, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(cost)
        ax.set_ylabel(f"test {quality} (model.onnx)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{scan.folder.name}: {len(done)} completed trials")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rebuild_command(scan: Scan, row: dict) -> str:
    sets = [*scan.overrides, *_trial_overrides(scan, row)]
    parts = ["edgeann", "train", str(scan.flow), *[a for s in sets for a in ("--set", s)],
             "--out", f"runs/{scan.folder.name}-trial{row['trial']}"]
    return shlex.join(parts)


def _trial_overrides(scan: Scan, row: dict) -> list[str]:
    import yaml

    from edgeann.scan.space import overrides

    values = {k: (yaml.safe_load(row[k]) if isinstance(row[k], str) and row[k].startswith("[") else row[k])
              for k in scan.space.parameters}
    return overrides(values)


def summary_markdown(scan: Scan, rows: list[dict], front: list[dict], command: str) -> str:
    objectives = ", ".join(f"{o.direction} {o.name}" for o in scan.space.objectives)
    done = [r for r in rows if r["state"] == "COMPLETE"]
    quality = next((o.name for o in scan.space.objectives if o.direction == "maximize"), "accuracy")
    lines = [f"# Scan {scan.folder.name}", "",
             f"Flow `{scan.flow}`; objectives: {objectives}; constraints: "
             f"{', '.join(f'`{c}`' for c in scan.space.constraints) or 'none'}; sampler {scan.space.sampler}.", "",
             f"{len(done)} completed trials, {sum(r['state'] == 'FAIL' for r in rows)} failed, "
             f"{len(front)} on the Pareto front. Command: `{command}`", ""]
    lines += ["## Best trial per constraint", ""]
    groups = [(f"`{c.text}`", [r for r in done if c.violation(_measured(r, scan)) <= 0])
              for c in scan.space.parsed_constraints()]
    if len(scan.space.constraints) != 1:
        groups.append(("all constraints" if scan.space.constraints else "no constraint",
                       [r for r in done if r["feasible"] is True]))
    for label, candidates in groups:
        if not candidates:
            lines += [f"- {label}: no completed trial meets it", ""]
            continue
        best = max(candidates, key=lambda r: float(r[quality]))
        lines += [f"- {label}: trial {best['trial']}, {quality} {float(best[quality]):.4f}, "
                  + ", ".join(f"{c} {float(best[c]):.4g}" for c in scan.space.costs()), "",
                  "  ```", f"  {rebuild_command(scan, best)}",
                  f"  edgeann export {scan.folder} --trial {best['trial']} --fpga", "  ```", ""]
    lines += ["## Pareto front", "", "| trial | " + " | ".join(scan.space.parameters) + f" | {quality} | "
              + " | ".join(scan.space.costs()) + " |",
              "|" + "---|" * (2 + len(scan.space.parameters) + len(scan.space.costs()))]
    for r in sorted(front, key=lambda r: float(r[scan.space.costs()[0]])):
        lines.append(f"| {r['trial']} | " + " | ".join(str(r[k]) for k in scan.space.parameters)
                     + f" | {float(r[quality]):.4f} | " + " | ".join(f"{float(r[c]):.4g}" for c in scan.space.costs()) + " |")
    lines += ["", "Every trial: `trials.csv`; the front: `pareto.csv`, `pareto.png`.", ""]
    return "\n".join(lines)


def _measured(row: dict, scan: Scan) -> dict[str, float]:
    return {k: float(row[k]) for k in [*METRIC_COLUMNS, *scan.space.costs()] if row.get(k, "") != ""}
