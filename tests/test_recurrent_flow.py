"""The GRU and LSTM families end to end through the CLI on a small synthetic sequence sample: QAT + pruning,
export, firmware, bit-exact C simulation on 10,000 vectors, report; and the flows' bad input."""

from __future__ import annotations

import json

import pytest

from edgeann.cli import main
from edgeann.config import load_flow

TINY_GRU = {
    "name": "tiny_gru",
    "seed": 5,
    "data": {"source": "synthetic", "n_samples": 1500, "n_features": 4, "sequence_length": 6},
    "model": {"family": "gru", "hidden": [6], "gate_bits": 6, "table_bits": 6},
    "quantization": {"input_bits": 8, "weight_bits": 6, "activation_bits": 8, "output_bits": 8},
    "pruning": {"method": "iterative", "target_sparsity": 0.4, "step": 0.2, "start": 0.0, "end": 0.5},
    "training": {"epochs": 3, "batch_size": 64, "lr": 0.01, "device": "cpu"},
}


def _write(path, tree):
    import yaml

    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture(scope="module", params=["gru", "lstm"])
def recurrent_run(request, tmp_path_factory):
    """(family, run directory, firmware project) of the tiny flow with a GRU or an LSTM."""
    family = request.param
    root = tmp_path_factory.mktemp(f"{family}_flow")
    tree = json.loads(json.dumps(TINY_GRU))
    tree["model"]["family"] = family
    flow = _write(root / f"tiny_{family}.yaml", tree)
    assert main(["train", str(flow), "--out", str(root / "run"), "-q"]) == 0
    assert main(["export", str(root / "run"), "--fpga", "--out", str(root / "prj")]) == 0
    return family, root / "run", root / "prj"


@pytest.mark.csim
def test_firmware_is_bit_exact_on_10000_sequences(recurrent_run):
    _, _, prj = recurrent_run
    v = json.loads((prj / "verification.json").read_text())
    assert v["exact"] is True and v["exact_fraction"] == 1.0 and v["mismatches"] == 0
    assert v["n_samples"] >= 10_000 and v["n_outputs"] == 5 * v["n_samples"]
    assert v["inputs"]["data"] == 300 and v["inputs"]["edge"] > 0
    twin = v["distance_to_float_twin"]
    assert twin["available"] and twin["n_samples"] == 300
    assert 0 < twin["mean_abs_diff"] <= twin["max_abs_diff"] < 5
    assert twin["accuracy_fixed_point"] > 0.35 and twin["accuracy_float"] > 0.35  # five classes: chance is 0.2
    assert main(["verify", str(prj)]) == 0


@pytest.mark.csim
def test_run_metrics_and_report(recurrent_run):
    family, run, prj = recurrent_run
    layer, gates = f"{family}1", {"gru": 3, "lstm": 4}[family]
    m = json.loads((run / "metrics.json").read_text())
    assert m["family"] == family and m["onnx_exact"] is True and m["export"]["graph_vs_pytorch"]["exact"]
    assert m["test"]["accuracy"] > 0.35  # five classes: chance is 0.2
    assert m["export"]["qonnx_vs_pytorch"]["skipped"] and layer in m["export"]["qonnx_vs_pytorch"]["reason"]
    assert not (run / "model.qonnx.onnx").exists()
    assert {f"{layer}_ih", f"{layer}_hh", "fc1"} == set(m["sparsity"]["layers"])
    assert m["sparsity"]["total"] == pytest.approx(0.4, abs=0.01)
    assert m["tensor_types"][layer].startswith("ap_fixed<8,")

    r = json.loads((prj / "report.json").read_text())
    row = next(row for row in r["layers"] if row["layer"] == layer)
    assert (row["op"], row["n_in"], row["n_out"], row["steps"]) == (family.upper(), 4, 6, 6)
    assert row["n_weights"] == gates * 6 * (4 + 6) and row["nonzero_weights"] < row["n_weights"]
    assert row["multiplications"] <= row["nonzero_weights"] + (gates - 1) * 6
    assert row["multipliers"] == row["multiplications"]  # reuse factor 1
    assert row["bops"] == pytest.approx(6 * row["bops_per_step"])
    lat = r["latency_estimate"]
    step = lat["recurrent"][layer]
    assert step["steps"] == 6 and lat["per_layer"][layer] == 6 * step["cycles_per_step"]
    assert lat["cycles"] == sum(lat["per_layer"].values()) and lat["initiation_interval"] >= lat["per_layer"][layer]


@pytest.mark.parametrize("name", ["jet_gru", "jet_lstm"])
def test_jet_recurrent_flows_share_the_jet_file(name):
    flow, mlp = load_flow(name), load_flow("jet_mlp")
    assert flow.model.family == name.removeprefix("jet_") and flow.data.representation == "sequences"
    assert flow.data.file() == mlp.data.file()
    assert flow.pruning.target_sparsity > 0 and flow.quantization.enabled


def _run_bad(capsys, tmp_path, edit):
    tree = json.loads(json.dumps(TINY_GRU))
    edit(tree)
    code = main(["train", str(_write(tmp_path / "bad.yaml", tree)), "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("edgeann: error: ") and "\n" not in err, err
    assert not (tmp_path / "r").exists()
    return err


@pytest.mark.parametrize("edit, fragments", [
    (lambda t: t["model"].update(hiden=[4]), ["unknown key model.hiden", "gate_bits"]),
    (lambda t: t["model"].update(gate_bits=13), ["model.gate_bits", "less than or equal to 12"]),
    (lambda t: t["model"].update(table_bits=1), ["model.table_bits"]),
    (lambda t: t["model"].update(hidden=[]), ["model.hidden"]),
    (lambda t: t["data"].update(sequence_length=0), ["data.sequence_length"]),
    (lambda t: t["data"].pop("sequence_length"), ["gru family takes sequences"]),
])
def test_bad_gru_flows(capsys, tmp_path, edit, fragments):
    err = _run_bad(capsys, tmp_path, edit)
    for f in fragments:
        assert f in err, err
