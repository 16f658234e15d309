"""The ``report`` stage's human side: the summary table printed at the end of ``run`` / ``export`` and
``report.md``, a page a physicist can attach to a trigger review (readable on GitHub and GitLab).

Everything here reads the JSON records the other stages wrote (``metrics.json`` of the run,
``report.json`` and ``verification.json`` of the project); nothing is recomputed, so the table
and the page say exactly what the records say.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPORT_MD = "report.md"
PLOTS = "plots"


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def project_records(project: Path) -> dict:
    """The records of a firmware project, and of the run it was exported from when there is one."""
    project = Path(project)
    records = {name: _load(project / f"{name}.json") for name in ("report", "verification")}
    source = _load(project / "edgeann" / "source.json") or {}
    run_dir = Path(source["source"]) if source.get("kind") == "run" and source.get("source") else None
    rtl = _load(project / "rtl" / "report.json")  # export --fpga --rtl: the RTL project inside the hls4ml one
    if rtl and records["report"] is not None and rtl.get("backends"):
        records["report"] = {**records["report"],
                             "backends": {**(records["report"].get("backends") or {}), **rtl["backends"]}}
        records["rtl_verification"] = _load(project / "rtl" / "verification.json")
    records["source"] = source
    records["run_dir"] = run_dir if run_dir is not None and run_dir.is_dir() else None
    records["metrics"] = _load(run_dir / "metrics.json") if records["run_dir"] else None
    return records


def _fmt_int(n) -> str:
    return f"{int(n):,}"


def _multipliers(totals: dict, reuse: int) -> str:
    instantiated = totals.get("multipliers")
    products = totals.get("multiplications")
    if products is None:  # a report written before multiplications and multipliers were told apart
        return f"{_fmt_int(instantiated)} multiplications (reuse factor {reuse})"
    return f"{_fmt_int(instantiated)} instantiated for {_fmt_int(products)} multiplications (reuse factor {reuse})"


def _latency(lat: dict, clock: float | None) -> str:
    if not lat or lat.get("cycles") is None:
        return (lat or {}).get("reason", "not estimated")
    ii = lat.get("initiation_interval")
    return (f"{lat['cycles']} cycles = {lat['ns']:g} ns at {clock:g} ns, initiation interval {ii}"
            + (" (analytical estimate)" if "model" in lat else ""))


def _resources(report: dict) -> str:
    """Synthesized resources from whichever back end reported them; else say how to get them."""
    found = []
    for backend, entry in (report.get("backends") or {}).items():
        res = (entry or {}).get("resources") or {}
        if res.get("lut") is not None:
            found.append(f"{backend}: {_fmt_int(res['lut'])} LUT, {_fmt_int(res.get('ff', 0))} FF, "
                         f"{_fmt_int(res.get('dsp', 0))} DSP ({res.get('tool', 'synthesis')})")
    synth = report.get("synthesis") or {}
    if synth.get("status") == "done" and synth.get("report"):
        found.append("HLS C synthesis: see report.json synthesis")
    if found:
        return "; ".join(found)
    reason = synth.get("reason") if synth.get("status") == "skipped" else "no synthesis run"
    return f"not known ({reason})" if reason else "not known"


def _backend_latencies(report: dict) -> list[tuple[str, dict]]:
    """(back end, latency) for the back ends whose pipelines report an exact latency (the RTL one)."""
    return [(name, entry["latency"]) for name, entry in (report.get("backends") or {}).items()
            if isinstance((entry or {}).get("latency"), dict) and entry["latency"].get("cycles") is not None]


def _exactness(v: dict) -> str:
    per_vector = v["n_outputs"] // max(v["n_samples"], 1)
    if v["exact"]:
        return f"yes: {_fmt_int(v['n_samples'])} vectors x {per_vector} outputs equal to {v['reference']}"
    return (f"NO: {_fmt_int(v['mismatches'])} of {_fmt_int(v['n_outputs'])} outputs differ from {v['reference']}, "
            f"max {v['max_lsb_diff']:g} LSB")


def _input(report: dict, shown_as: Path) -> str | None:
    inp = report.get("input")
    if not isinstance(inp, dict):
        return None
    text = inp.get("firmware_input", "")
    if inp.get("scaling_header"):
        text += f"; raw features to it: {shown_as / inp['scaling_header']}"
        agree = inp.get("agreement_with_float_path") or {}
        if agree.get("on"):
            text += (f" (equal to training's float path on {100 * agree['equal_fraction']:.3f}% of the "
                     f"{agree['on']} values, max {agree['max_lsb_diff']} LSB)")
    return text


def summary_rows(project: Path, records: dict | None = None, shown_as: Path | None = None) -> list[tuple[str, str]]:
    """(label, value) rows: what a trigger review asks first. ``shown_as``: the project's path to print, when
    the records are read from elsewhere (the staging folder of an export)."""
    project = Path(project)
    rec = records or project_records(project)
    shown = Path(shown_as) if shown_as is not None else project
    report, verification, metrics = rec["report"] or {}, rec["verification"], rec["metrics"]
    options = report.get("options", {})
    rows: list[tuple[str, str]] = [("model", f"{report.get('model', project.name)}"
                                             + (f" ({metrics['family']}, flow {metrics['flow']})" if metrics else ""))]
    if metrics:
        test = metrics["test"]
        acc = f"{test['accuracy']:.4f} on {_fmt_int(test['n_samples'])} test samples (fixed point, from model.onnx)"
        twin = (verification or {}).get("distance_to_float_twin") or {}
        if twin.get("accuracy_float") is not None:
            acc += f"; float twin {twin['accuracy_float']:.4f}"
        rows.append(("test accuracy", acc))
        rows.append(("mean AUC", f"{test['roc_auc_mean']:.4f} (one-vs-rest: "
                                 + ", ".join(f"{k} {a:.3f}" for k, a in test["roc_auc"].items()) + ")"))
        rows.append(("sparsity", f"{metrics['sparsity']['total']:.2f} of the weights are zero"))
    totals = report.get("totals") or {}
    if totals:
        rows.append(("BOPs", f"{totals['bops']:.4g}"))
        if "reuse_factor" in options:  # hls4ml's; the RTL back end turns constant products into adder trees
            rows.append(("multipliers", _multipliers(totals, options["reuse_factor"])))
    if report.get("latency_estimate") or not _backend_latencies(report):
        rows.append(("latency", _latency(report.get("latency_estimate") or {}, options.get("clock_period"))))
    for backend, lat in _backend_latencies(report):
        rows.append((f"latency ({backend})", f"{lat['cycles']} cycles = {lat['ns']:g} ns at {lat['clock_period_ns']:g} "
                                             f"ns, initiation interval {lat['initiation_interval']} ({lat['pipeline_stages']} "
                                             "pipeline stages)"))
    rows.append(("resources", _resources(report)))
    inp = _input(report, shown)
    if inp:
        rows.append(("firmware input", inp))
    if verification:
        rows.append(("bit-exact" if verification.get("backend", "hls4ml") == "hls4ml" else
                     f"bit-exact ({verification['backend']})", _exactness(verification)))
    if rec.get("rtl_verification"):
        rows.append(("bit-exact (rtl)", _exactness(rec["rtl_verification"])))
    rows.append(("project", str(shown)))
    if rec["run_dir"]:
        rows.append(("run", str(rec["run_dir"])))
    rows.append(("report", str(shown / REPORT_MD)))
    return rows


def text_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _md_table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _layer_rows(report: dict) -> tuple[list[str], list[list]]:
    header = ["layer", "op", "input type", "weight bits", "accumulator", "weights (nonzero)", "multiplications",
              "multipliers", "BOPs"]
    rows = []
    per_layer_cycles = (report.get("latency_estimate") or {}).get("per_layer") or {}
    for r in report.get("layers", []):
        rows.append([r["layer"], r["op"], r.get("input_type", ""), r.get("weight_bits", ""), r.get("accumulator_type", ""),
                     f"{_fmt_int(r['n_weights'])} ({_fmt_int(r['nonzero_weights'])})", _fmt_int(r.get("multiplications", 0)),
                     _fmt_int(r.get("multipliers", 0)),
                     f"{r['bops']:.4g}"])
    if per_layer_cycles:
        header.append("cycles")
        by_name = {r[0]: r for r in rows}
        for name, row in by_name.items():
            row.append(per_layer_cycles.get(name, ""))
    return header, rows


def write_report_md(project: Path, shown_as: Path | None = None) -> Path:
    """``report.md`` in the project: the summary, per-layer cost, verification and plots (copied beside it).
    ``shown_as``: the path the project will have (it is written in a staging folder first)."""
    from edgeann import plots

    project = Path(project)
    rec = project_records(project)
    report, verification, metrics = rec["report"] or {}, rec["verification"] or {}, rec["metrics"]
    plot_dir = project / PLOTS
    plot_dir.mkdir(exist_ok=True)
    images = []
    if rec["run_dir"]:
        for name, caption in (("learning_curves.png", "Training: loss, accuracy and sparsity per epoch"),
                              ("roc_curves.png", "Signal efficiency vs mistag rate per class (fixed-point model, test split)")):
            if (rec["run_dir"] / name).is_file():
                shutil.copyfile(rec["run_dir"] / name, plot_dir / name)
                images.append((f"{PLOTS}/{name}", caption))
    if report.get("layers"):
        plots.layer_costs(report["layers"], plot_dir / "layer_costs.png", title=f"{report.get('model', '')}: cost per layer")
        images.append((f"{PLOTS}/layer_costs.png", "Multipliers and BOPs per layer"))

    lines = [f"# {report.get('model', project.name)}: firmware report", ""]
    lines += ["Written by `edgeann export`; the numbers come from `report.json`, `verification.json`"
              + (" and the run's `metrics.json`." if metrics else "."), ""]
    lines += [_md_table(["", ""], [[f"**{k}**", v] for k, v in summary_rows(project, rec, shown_as)]), ""]
    options = report.get("options") or {}
    if options:
        lines += ["## Firmware options", "", _md_table(["option", "value"], [[k, v] for k, v in options.items()]), ""]
    if report.get("layers"):
        header, rows = _layer_rows(report)
        lines += ["## Cost per layer", "", _md_table(header, rows), ""]
        model = (report.get("latency_estimate") or {}).get("model")
        if model:
            lines += [f"Latency model: {model}.", ""]
    if verification:
        lines += ["## Verification", "", verification.get("summary", ""), ""]
        lines += [_md_table(["reference", "vectors", "outputs", "mismatches", "max LSB difference"],
                            [[name, _fmt_int(c["n_samples"]), _fmt_int(c["n_outputs"]), _fmt_int(c["mismatches"]),
                              f"{c['max_lsb_diff']:g}"] for name, c in verification.get("comparisons", {}).items()]), ""]
        inputs = verification.get("inputs") or {}
        if inputs:
            lines += ["Vectors: " + ", ".join(f"{v} {k}" for k, v in inputs.items())
                      + f"; firmware sha256 `{verification.get('firmware_sha256', '')}`.", ""]
        twin = verification.get("distance_to_float_twin") or {}
        if twin.get("available"):
            lines += [f"Against the same weights in float ({twin['n_samples']} test samples): max |diff| "
                      f"{twin['max_abs_diff']:.4g}, mean {twin['mean_abs_diff']:.4g}, argmax agreement "
                      f"{twin.get('argmax_agreement', float('nan')):.4f}.", ""]
    if images:
        lines += ["## Plots", ""]
        for path, caption in images:
            lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    path = project / REPORT_MD
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
