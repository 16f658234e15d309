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
    check = m["export"]["onnxruntime_vs_pytorch"]
    exact = "yes" if check["exact"] else f"NO ({check['mismatches']} mismatches)"
    click.echo(
        f"{run_dir}: test accuracy {m['test']['accuracy']:.4f}, mean AUC {m['test']['roc_auc_mean']:.4f}, "
        f"sparsity {m['sparsity']['total']:.2f}, BOPs {m['bops']:.4g}; "
        f"onnxruntime == PyTorch on all {check['n_samples']} test samples: {exact}"
    )


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
