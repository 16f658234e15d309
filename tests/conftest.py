"""Shared fixtures: tiny flows on the synthetic source, and one trained run reused by many tests."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import yaml

warnings.filterwarnings("ignore")

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"source": "synthetic", "n_samples": 3000},
    "model": {"family": "mlp", "hidden": [32, 16]},
    "quantization": {"input_bits": 8, "weight_bits": 6, "activation_bits": 6, "output_bits": 8},
    "pruning": {"method": "iterative", "target_sparsity": 0.5, "step": 0.25, "start": 0.0, "end": 0.5},
    "training": {"epochs": 6, "batch_size": 128, "lr": 0.005, "device": "cpu"},
}


def write_flow(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture
def tiny_flow_tree() -> dict:
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_flow(tmp_path, tiny_flow_tree) -> Path:
    return write_flow(tmp_path / "tiny.yaml", tiny_flow_tree)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One short training run of the tiny flow (CPU), shared by the tests that read its outputs."""
    from edgeann.config import load_flow
    from edgeann.pipeline import train_run

    root = tmp_path_factory.mktemp("trained")
    flow = load_flow(write_flow(root / "tiny.yaml", TINY))
    return train_run(flow, root / "run", progress=False)


@pytest.fixture(scope="session")
def exported_project(trained_run, tmp_path_factory) -> Path:
    """``trained_run`` exported once with the default project name (``hls_projects/<run folder>``, from the
    working directory), compiled and verified; tests that change a project work on a copy."""
    from edgeann.pipeline import export_firmware

    root = tmp_path_factory.mktemp("exported")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        project, _ = export_firmware(trained_run, echo=lambda *a: None)
    finally:
        os.chdir(cwd)
    return root / project


@pytest.fixture
def make_flow(tmp_path):
    """Write a flow tree to a YAML file in the test's directory."""

    def make(tree: dict, name: str = "flow.yaml") -> Path:
        return write_flow(tmp_path / name, tree)

    return make
