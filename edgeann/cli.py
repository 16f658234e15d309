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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    from edgeann.pipeline import train_run

    if force and resume:
        raise EdgeannError("--force and --resume exclude each other")
    cfg = load_flow(flow, list(overrides), epochs=epochs, device=device)
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
    f = click.option("--io-type", type=click.Choice(["io_parallel", "io_stream"]), help="hls4ml io type.")(f)
    f = click.option("--strategy", type=click.Choice(["Latency", "Resource"], case_sensitive=False), help="hls4ml strategy.")(f)
    f = click.option("--reuse-factor", type=click.IntRange(min=1), help="Multiplications per multiplier.")(f)
    f = click.option("--clock-period", type=click.FloatRange(min=0, min_open=True), help="Clock period in ns.")(f)
    f = click.option("--part", help="FPGA part, e.g. xcvu13p-flga2577-2-e.")(f)
    return f


def _overrides(**kw) -> dict:
    return {k: (v.capitalize() if k == "backend" else v) for k, v in kw.items() if v is not None}


@app.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--fpga", is_flag=True, help="Build hls4ml firmware, compile its C simulation and verify it bit for bit.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Project directory (default hls_projects/<name>; with --rtl alone hls_projects/<name>_rtl).")
@click.option("--force", is_flag=True, help="Replace an existing project directory.")
@click.option("--precision", metavar="TYPE", help="For a float ONNX model: post-training fixed point, e.g. 'ap_fixed<16,6>'.")
@click.option("--synth", is_flag=True, help="Also run C synthesis when Vitis/Vivado HLS is on PATH.")
@click.option("--rtl", is_flag=True, help="Open-source RTL: alkaid Verilog, Verilator simulation verified bit for bit, "
                                         "Yosys synthesis (with --fpga: written to OUT/rtl).")
@click.option("--no-synth", is_flag=True, help="With --rtl: skip Yosys and keep alkaid's resource estimate.")
@click.option("--allow-mismatch", is_flag=True, help="Exit 0 even when the firmware is not bit-exact.")
@_fpga_options
def export(source, fpga, out, force, precision, synth, rtl, no_synth, allow_mismatch, backend, io_type, strategy,
           reuse_factor, clock_period, part):
    """Firmware from SOURCE: a run directory from `edgeann train`, a QONNX model, or a float ONNX
    model with --precision. Writes verification.json and report.json into the project."""
    from edgeann.pipeline import export_firmware, export_rtl

    if not fpga and not rtl:
        raise EdgeannError("nothing to do: `edgeann train` already exports ONNX and QONNX; add --fpga for hls4ml "
                           "firmware or --rtl for open-source Verilog")
    overrides = _overrides(backend=backend, io_type=io_type, strategy=strategy, reuse_factor=reuse_factor,
                           clock_period=clock_period, part=part)
    results = []
    if fpga:
        project, result = export_firmware(source, out, overrides, force=force, precision=precision, synth=synth,
                                          echo=click.echo)
        _verification_outcome(project, result, allow_mismatch=True)
        results.append(result)
    if rtl:
        rtl_out = (project / "rtl") if fpga else out
        rtl_project, rtl_result = export_rtl(source, rtl_out, overrides, force=force, precision=precision,
                                             synth=not no_synth, echo=click.echo)
        _verification_outcome(rtl_project, rtl_result, allow_mismatch=True)
        results.append(rtl_result)
    if not allow_mismatch and not all(r["exact"] for r in results):
        raise click.exceptions.Exit(1)


def _verification_outcome(project: Path, result: dict, allow_mismatch: bool) -> None:
    click.echo(f"{project}: {result['summary']}")
    twin = result.get("distance_to_float_twin", {})
    if twin.get("available") and "accuracy_float" in twin:
        click.echo(f"firmware vs the same weights in float on {twin['n_samples']} test samples: max |diff| "
                   f"{twin['max_abs_diff']:.4g}, mean {twin['mean_abs_diff']:.4g}; accuracy {twin['accuracy_fixed_point']:.4f} "
                   f"(firmware) vs {twin['accuracy_float']:.4f} (float)")
    click.echo(f"{project / 'verification.json'}, {project / 'report.json'}; firmware sha256 {result['firmware_sha256'][:16]}…")
    if not result["exact"] and not allow_mismatch:
        raise click.exceptions.Exit(1)


@app.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path), help="A .npy file of input vectors (default: the export's).")
@click.option("--allow-mismatch", is_flag=True, help="Exit 0 even when the firmware is not bit-exact.")
def verify(project, inputs, allow_mismatch):
    """Re-run the bit-exactness check of an exported firmware PROJECT."""
    from edgeann.pipeline import verify_project

    _verification_outcome(project, verify_project(project, inputs), allow_mismatch)


@app.command()
@click.argument("flow", required=False)
@click.option("--epochs", type=click.IntRange(min=1), help="Override training.epochs.")
@click.option("--device", help="auto, cpu, cuda or cuda:N (overrides training.device).")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default runs/<flow name>).")
@click.option("--project", type=click.Path(path_type=Path), help="Firmware project (default hls_projects/<flow name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override any flow key (repeatable).")
@click.option("--force", is_flag=True, help="Replace an existing run directory and project.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run(flow, epochs, device, out, project, overrides, force, quiet):
    """The whole line on FLOW (default jet_mlp): train -> export -> firmware -> C simulation -> verify -> report."""
    from edgeann.config import load_flow
    from edgeann.pipeline import default_run_dir, export_firmware, train_run

    cfg = load_flow(flow, list(overrides), epochs=epochs, device=device)
    target = Path(project) if project else Path("hls_projects") / cfg.name
    if target.exists() and any(target.iterdir()) and not force:
        raise EdgeannError(f"output directory {target} already exists; use --force to replace it")
    run_dir = train_run(cfg, out or default_run_dir(cfg), force=force, progress=not quiet)
    _train_summary(run_dir)
    proj, result = export_firmware(run_dir, target, force=force, echo=click.echo)
    _verification_outcome(proj, result, False)


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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and exit status 2."""
    warnings.filterwarnings("ignore")
    try:
        app.main(args=argv, prog_name="edgeann", standalone_mode=False)
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
