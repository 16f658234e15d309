"""The ``edgeann`` command: a thin layer over :mod:`edgeann.pipeline`.

Every command calls one library function a Python user can call too. Problems with the user's
input end in one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from edgeann.errors import EdgeannError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeann")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "--version", "-V", prog_name="edgeann", message="%(prog)s %(version)s")
def app():
    """From PyTorch quantization-aware training to bit-exact FPGA trigger firmware."""


@app.command()
@click.argument("flow", required=False)
@click.option("--epochs", type=click.IntRange(min=1), help="Override training.epochs.")
@click.option("--device", help="auto, cpu, cuda or cuda:N (overrides training.device).")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<flow name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override any flow key (repeatable).")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(flow, epochs, device, out, overrides, force, resume, quiet):
    """Quantization-aware training with pruning of FLOW (a YAML file or a name in flows/;
    default jet_mlp). Writes metrics, plots, checkpoints, model.onnx and model.qonnx.onnx."""
    from edgeann.config import load_flow

    if force and resume:
        raise EdgeannError("--force and --resume exclude each other")
    cfg = load_flow(flow, list(overrides), epochs=epochs, device=device)  # before the heavy imports: typos in a second
    from edgeann.pipeline import train_run

    run_dir = train_run(cfg, out, force=force, resume=resume, progress=not quiet)
    _train_summary(run_dir)


def _train_summary(run_dir: Path) -> None:
    import json

    m = json.loads((run_dir / "metrics.json").read_text())
    head = (f"{run_dir}: test accuracy {m['test']['accuracy']:.4f}, mean AUC {m['test']['roc_auc_mean']:.4f}, "
            f"sparsity {m['sparsity']['total']:.2f}")
    if not m.get("quantized", True):
        click.echo(head + " (float model: no fixed-point export)")
        return
    check = m["export"]["onnxruntime_vs_pytorch"]
    exact = "yes" if check["exact"] else f"NO ({check['mismatches']} mismatches)"
    click.echo(f"{head}, BOPs {m['bops']:.4g}; onnxruntime == PyTorch on all {check['n_samples']} test samples: {exact}")


def _fpga_options(f):
    f = click.option("--backend", type=click.Choice(["Vitis", "Vivado"], case_sensitive=False), help="HLS back end.")(f)
    f = click.option("--io-type", type=click.Choice(["io_parallel", "io_stream"], case_sensitive=False),
                     help="hls4ml io type.")(f)
    f = click.option("--strategy", type=click.Choice(["Latency", "Resource"], case_sensitive=False), help="hls4ml strategy.")(f)
    f = click.option("--reuse-factor", type=click.IntRange(min=1), help="Multiplications per multiplier.")(f)
    f = click.option("--clock-period", type=click.FloatRange(min=0, min_open=True), help="Clock period in ns.")(f)
    f = click.option("--part", help="FPGA part, e.g. xcvu13p-flga2577-2-e.")(f)
    return f


def _overrides(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}  # click.Choice already gives the canonical spelling


@app.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--fpga", is_flag=True, help="Build hls4ml firmware, compile its C simulation and verify it bit for bit.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Project directory (default hls_projects/<name>; with --rtl alone hls_projects/<name>_rtl).")
@click.option("--force", is_flag=True, help="Replace an existing project directory.")
@click.option("--precision", metavar="TYPE", help="For a float ONNX model: post-training fixed point, e.g. 'ap_fixed<16,6>'.")
@click.option("--input-precision", metavar="TYPE",
              help="For a quantized model whose input is not quantized (QKeras): the firmware's input type, e.g. "
                   "'ap_fixed<8,1>'; verification draws inputs on its grid.")
@click.option("--synth", is_flag=True, help="Also run C synthesis when Vitis/Vivado HLS is on PATH.")
@click.option("--rtl", is_flag=True, help="Open-source RTL: alkaid Verilog, Verilator simulation verified bit for bit, "
                                         "Yosys synthesis (with --fpga: written to OUT/rtl).")
@click.option("--no-synth", is_flag=True, help="With --rtl: skip Yosys and keep alkaid's resource estimate.")
@click.option("--allow-mismatch", is_flag=True, help="Exit 0 even when the firmware is not bit-exact.")
@click.option("--trial", type=click.IntRange(min=0), help="SOURCE is a scan folder: export this trial's run.")
@_fpga_options
def export(source, fpga, out, force, precision, input_precision, synth, rtl, no_synth, allow_mismatch, trial, backend,
           io_type, strategy, reuse_factor, clock_period, part):
    """Firmware from SOURCE: a run directory from `edgeann train`, a QONNX model, a float ONNX
    model with --precision, or a scan folder with --trial. --fpga writes an hls4ml project, --rtl a Verilog one;
    each gets verification.json, report.json and report.md."""
    from edgeann.pipeline import export_firmware, export_rtl

    if not fpga and not rtl:
        raise EdgeannError("nothing to do: `edgeann train` already exports ONNX and QONNX; add --fpga for hls4ml "
                           "firmware or --rtl for open-source Verilog")
    if no_synth and not rtl:
        raise EdgeannError("--no-synth is for --rtl (hls4ml synthesis runs only with --synth)")
    if trial is not None:
        from edgeann.scan import default_trial_project, trial_run_dir

        source, out = trial_run_dir(source, trial), out or default_trial_project(source, trial)
    overrides = _overrides(backend=backend, io_type=io_type, strategy=strategy, reuse_factor=reuse_factor,
                           clock_period=clock_period, part=part)
    exported = []
    if fpga:
        exported.append(export_firmware(source, out, overrides, force=force, precision=precision, synth=synth,
                                        echo=click.echo, input_precision=input_precision))
    if rtl:
        rtl_out = exported[0][0] / "rtl" if fpga else out
        exported.append(export_rtl(source, rtl_out, overrides, force=force, precision=precision, synth=not no_synth,
                                   echo=click.echo, input_precision=input_precision))
    for project, result in exported:
        _export_outcome(project, result, allow_mismatch=True)
    if not allow_mismatch and not all(result["exact"] for _, result in exported):
        raise click.exceptions.Exit(1)


def _export_outcome(project: Path, result: dict, allow_mismatch: bool) -> None:
    """The end of an export: the summary table a trigger review asks for, then the exit status."""
    from edgeann.summary import summary_rows, text_table

    click.echo(f"{project}: {result['summary']}")
    click.echo(text_table(summary_rows(project)))
    if not result["exact"] and not allow_mismatch:
        raise click.exceptions.Exit(1)


def _verification_outcome(project: Path, result: dict, allow_mismatch: bool, written: list[Path] | None = None) -> None:
    click.echo(f"{project}: {result['summary']}")
    twin = result.get("distance_to_float_twin", {})
    if twin.get("available") and "accuracy_float" in twin:
        click.echo(f"firmware vs the same weights in float on {twin['n_samples']} test samples: max |diff| "
                   f"{twin['max_abs_diff']:.4g}, mean {twin['mean_abs_diff']:.4g}; accuracy {twin['accuracy_fixed_point']:.4f} "
                   f"(firmware) vs {twin['accuracy_float']:.4f} (float)")
    written = written or [project / "verification.json", project / "report.json"]
    click.echo(f"{', '.join(map(str, written))}; firmware sha256 {result['firmware_sha256'][:16]}…")
    if not result["exact"] and not allow_mismatch:
        raise click.exceptions.Exit(1)


@app.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace example files already in FOLDER.")
def examples(folder, force):
    """Write example foreign models (QKeras-, Brevitas- and FINN-style QONNX) into FOLDER, each with the export
    command that checks its firmware bit for bit against the original."""
    from edgeann.examples import EXAMPLES, write_examples

    if folder.exists() and not folder.is_dir():
        raise EdgeannError(f"{folder} exists and is not a directory")
    present = [e.file for e in EXAMPLES if (folder / e.file).exists()]
    if present and not force:
        raise EdgeannError(f"{folder / present[0]} already exists; use --force to replace the example files")
    for example, path in write_examples(folder):
        click.echo(f"{path}: {example.kind}\n  {example.command(folder)}")


@app.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path), help="A .npy file of input vectors (default: the export's).")
@click.option("--allow-mismatch", is_flag=True, help="Exit 0 even when the firmware is not bit-exact.")
def verify(project, inputs, allow_mismatch):
    """Re-run the bit-exactness check of an exported firmware PROJECT."""
    from edgeann.pipeline import verify_project

    record, result = verify_project(project, inputs)
    _verification_outcome(project, result, allow_mismatch, [record])


@app.command()
@click.argument("flow", required=False)
@click.option("--epochs", type=click.IntRange(min=1), help="Override training.epochs.")
@click.option("--device", help="auto, cpu, cuda or cuda:N (overrides training.device).")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<flow name>).")
@click.option("--project", type=click.Path(path_type=Path), help="Firmware project (default hls_projects/<run folder name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override any flow key (repeatable).")
@click.option("--force", is_flag=True, help="Replace an existing run directory and project.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint, then build firmware.")
@click.option("--synth", is_flag=True, help="Also run C synthesis when Vitis/Vivado HLS is on PATH.")
@click.option("--rtl", is_flag=True, help="Also write open-source RTL into PROJECT/rtl: Verilator-verified, Yosys cells.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@_fpga_options
def run(flow, epochs, device, out, project, overrides, force, resume, synth, rtl, quiet, backend, io_type, strategy,
        reuse_factor, clock_period, part):
    """The whole line on FLOW (default jet_mlp): train -> export -> firmware -> C simulation -> verify -> report."""
    from edgeann.config import load_flow

    if force and resume:
        raise EdgeannError("--force and --resume exclude each other")
    cfg = load_flow(flow, list(overrides), epochs=epochs, device=device)
    from edgeann.pipeline import default_project_dir, default_run_dir, export_firmware, export_rtl, train_run

    run_dir = Path(out) if out else default_run_dir(cfg)
    target = Path(project) if project else default_project_dir(run_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise EdgeannError(f"output directory {target} already exists; use --force to replace it or --project to "
                           "choose another")
    fpga = _overrides(backend=backend, io_type=io_type, strategy=strategy, reuse_factor=reuse_factor,
                      clock_period=clock_period, part=part)
    run_dir = train_run(cfg, run_dir, force=force, resume=resume, progress=not quiet)
    _train_summary(run_dir)
    proj, result = export_firmware(run_dir, target, fpga, force=force, synth=synth, echo=click.echo)
    _export_outcome(proj, result, allow_mismatch=rtl)
    if rtl:
        rtl_proj, rtl_result = export_rtl(run_dir, proj / "rtl", fpga, force=force, echo=click.echo)
        _export_outcome(rtl_proj, rtl_result, allow_mismatch=True)
        if not (result["exact"] and rtl_result["exact"]):
            raise click.exceptions.Exit(1)


@app.command()
@click.argument("flow")
@click.option("--space", "space", type=click.Path(path_type=Path), required=True, help="Space file (see scans/).")
@click.option("--trials", type=int, default=20, show_default=True, help="Completed trials of the whole study.")
@click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes (Ray: trials at a time).")
@click.option("--out", type=click.Path(path_type=Path), help="Scan folder (default scans/<space file name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override any flow key (repeatable).")
@click.option("--ray", "ray", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run trials as Ray tasks: alone a local Ray (or $RAY_ADDRESS), or a cluster's HOST:PORT.")
@click.option("--num-cpus", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Ray: CPUs per trial.")
@click.option("--num-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Ray: GPUs per trial.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def scan(flow, space, trials, workers, out, overrides, ray, num_cpus, num_gpus, quiet):
    """Pareto search over the flow keys of a SPACE file (bit widths, sparsity, layer sizes): Optuna in the
    scan folder, local workers or Ray. Writes trials.csv, pareto.csv, pareto.png and summary.md."""
    from edgeann.scan import run_scan

    result = run_scan(flow, space, trials, workers, out, list(overrides), ray=ray, num_cpus=num_cpus,
                      num_gpus=num_gpus, progress=not quiet, command=_scan_command(flow, space, trials, workers, out, overrides, ray),
                      echo=click.echo)
    click.echo(f"{result['folder']}: {sum(r['state'] == 'COMPLETE' for r in result['rows'])} completed trials, "
               f"{len(result['pareto'])} on the Pareto front (trials {', '.join(str(r['trial']) for r in result['pareto'])}); "
               f"see {result['folder'] / 'summary.md'}")


def _scan_command(flow, space, trials, workers, out, overrides, ray) -> str:
    import shlex

    args = ["edgeann", "scan", str(flow), "--space", str(space), "--trials", str(trials), "--workers", str(workers)]
    args += [a for s in overrides for a in ("--set", s)] + (["--out", str(out)] if out else [])
    return shlex.join(args + (["--ray"] if ray == "local" else ["--ray", ray] if ray else []))


@app.group()
def data():
    """Data sets: generate physics data offline."""


@data.group()
def generate():
    """Generate a data set."""


@generate.command("jets")
@click.option("--n-per-class", type=click.IntRange(min=1), required=True, help="Jets of each class (g, q, W, Z, top).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="HDF5 file to write.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Generator processes.")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True, help="Random seed.")
@click.option("--image-size", type=click.IntRange(min=4), default=16, show_default=True, help="Jet image pixels per side.")
@click.option("--n-constituents", type=click.IntRange(min=1), default=20, show_default=True, help="Sequence length.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def generate_jets_command(n_per_class, out, workers, seed, image_size, n_constituents, quiet):
    """Pythia 8 + FastJet jets at 13 TeV, pT near 1 TeV, anti-kT R=0.8: the 16 hls4ml features,
    jet images and constituent sequences, with physics checks and a mass plot beside the file."""
    from edgeann.data.jets import generate_jets, physics_checks

    path = generate_jets(out, n_per_class, seed=seed, workers=workers, image_size=image_size,
                         n_constituents=n_constituents, progress=not quiet)
    checks = physics_checks(path)
    masses = ", ".join(f"{c} {v['median_mass_mmdt_gev']:.1f}" for c, v in checks["classes"].items())
    click.echo(f"{path}: median groomed mass (GeV) {masses}; physics checks "
               f"{'passed' if checks['passed'] else 'FAILED: ' + ', '.join(k for k, v in checks['checks'].items() if not v['passed'])}")
    png = path.with_name(path.stem + "_physics.png")
    if png.exists():
        click.echo(f"plot: {png}")


@app.command("flows")
def list_flows():
    """List the flows that ship with edgeann."""
    from edgeann.config import FLOWS_DIR

    for p in sorted(FLOWS_DIR.glob("*.yaml")):
        click.echo(p.stem)


@app.command("keys")
@click.argument("section", required=False)
def flow_keys(section):
    """The reference of every flow key (type, default, range, meaning), generated from the flow schema;
    SECTION (e.g. pruning, model.cnn, data.jets) narrows it. The same text is docs/flow_keys.md."""
    from edgeann.flow_reference import reference_markdown

    click.echo(reference_markdown(section), nl=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit status 2."""
    warnings.filterwarnings("ignore")
    try:
        # without standalone mode click returns a command's click.exceptions.Exit code (e.g. 1 for a firmware that
        # is not bit-exact) instead of raising it
        status = app.main(args=argv, prog_name="edgeann", standalone_mode=False)
        if isinstance(status, int) and status:
            return status
    except EdgeannError as e:
        click.echo(f"edgeann: error: {e}", err=True)
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:  # click >= 8.2: bare `edgeann`
        click.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        return 2
    except click.ClickException as e:  # usage errors, bad option values, missing files
        click.echo(f"edgeann: error: {e.format_message()}", err=True)
        return e.exit_code if e.exit_code else 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("edgeann: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
