import pytest

from edgeann.config import Flow, QuantConfig, load_flow, parse_override
from edgeann.errors import EdgeannError


def test_default_flow_loads_and_round_trips():
    flow = load_flow("jet_mlp")
    assert flow.name == "jet_mlp"
    assert flow.model.family == "mlp" and flow.model.hidden == [64, 32, 32]
    assert flow.quantization.weight_bits == 6 and flow.quantization.activation_bits == 6
    again = Flow.model_validate(__import__("yaml").safe_load(flow.to_yaml()))
    assert again == flow


def test_overrides_are_typed_and_validated(tiny_flow):
    flow = load_flow(tiny_flow, ["model.hidden=[8, 4]", "quantization.layers.fc1.weight_bits=3"], epochs=2, device="cpu")
    assert flow.model.hidden == [8, 4]
    assert flow.training.epochs == 2 and flow.training.device == "cpu"
    assert flow.quantization.for_layer("fc1").weight_bits == 3
    assert flow.quantization.for_layer("fc2").weight_bits == flow.quantization.weight_bits


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.epoch=3", "unknown key training.epoch (expected one of: epochs,"),
        ("data.n_sampels=10", "unknown key data.n_sampels"),
        ("model.hidden=[4, x]", "model.hidden.1:"),
        ("quantization.weight_bits=9", "quantization.weight_bits: Input should be less than or equal to 8"),
        ("quantization.activation_bits=1", "quantization.activation_bits: Input should be greater than or equal to 2"),
        ("pruning.target_sparsity=1.0", "pruning.target_sparsity: Input should be less than 1"),
        ("pruning.target_sparsity=-0.1", "pruning.target_sparsity"),
        ("training.device=gpu", "training.device: expected auto, cpu, cuda or cuda:N"),
        ("data.source=csv", "data: Input tag 'csv'"),
        ("training.lr=fast", "training.lr: Input should be a valid number"),
    ],
)
def test_bad_values_name_file_key_and_expectation(tiny_flow, override, expected):
    with pytest.raises(EdgeannError) as e:
        load_flow(tiny_flow, [override])
    msg = str(e.value)
    assert str(tiny_flow) in msg and expected in msg
    assert "\n" not in msg


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {source: synthetic\nmodel: [")
    with pytest.raises(EdgeannError, match=r"bad.yaml:.*line \d+.*malformed YAML"):
        load_flow(bad)
    with pytest.raises(EdgeannError, match="not found"):
        load_flow(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(EdgeannError, match="expected a mapping"):
        load_flow(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(EdgeannError, match="empty"):
        load_flow(tmp_path / "empty.yaml")


def test_missing_sections_are_named(make_flow):
    with pytest.raises(EdgeannError, match="missing key model"):
        load_flow(make_flow({"data": {"source": "synthetic"}}))


def test_split_and_schedule_consistency(tiny_flow):
    with pytest.raises(EdgeannError, match="train \\+ val \\+ test must be 1"):
        load_flow(tiny_flow, ["data.split={train: 0.5, val: 0.2, test: 0.2}"])
    with pytest.raises(EdgeannError, match="must come after start"):
        load_flow(tiny_flow, ["pruning.start=0.8", "pruning.end=0.5"])
    with pytest.raises(EdgeannError, match="needs a target_sparsity"):
        load_flow(tiny_flow, ["pruning.target_sparsity=0"])


def test_parse_override():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a.b=text") == (["a", "b"], "text")
    with pytest.raises(EdgeannError):
        parse_override("novalue")


def test_quant_config_defaults():
    q = QuantConfig()
    assert (q.weight_bits, q.activation_bits) == (6, 6)


def test_command_line_spellings_are_one_rule(tiny_flow):
    """Choices in any case and lists without brackets, the same in --set as in the CLI options; stored canonical."""
    flow = load_flow(tiny_flow, ["fpga.strategy=resource", "fpga.backend=VIVADO", "fpga.io_type=IO_Stream",
                                 "model.hidden=64,32", "pruning.exclude=fc1,fc2", "training.schedule=Cosine"])
    assert (flow.fpga.strategy, flow.fpga.backend, flow.fpga.io_type) == ("Resource", "Vivado", "io_stream")
    assert flow.model.hidden == [64, 32] and flow.pruning.exclude == ["fc1", "fc2"]
    assert flow.training.schedule == "cosine"
    assert "strategy: Resource" in flow.to_yaml()
    tagged = load_flow(tiny_flow, ["model.family=MLP", "data.source=Synthetic"])
    assert tagged.model.family == "mlp" and tagged.data.source == "synthetic"


@pytest.mark.parametrize("override", ["pruning.exclude=fc1", "model.hidden=64;32"])
def test_a_list_written_wrongly_says_how_to_write_it(tiny_flow, override):
    with pytest.raises(EdgeannError, match=r"valid list .*write a list as \[a, b\] or a,b, one item as \[a\]"):
        load_flow(tiny_flow, [override])
    key, _, value = override.partition("=")
    fixed = load_flow(tiny_flow, [f"{key}=[{value.replace(';', ',')}]"])  # the advice, followed, works
    assert fixed is not None


def test_every_shipped_flow_loads_and_builds_its_model():
    """Each flows/*.yaml validates and its model builds for the jets data's sample shape."""
    from pathlib import Path

    from edgeann.models import create_model

    shapes = {"features": (16,), "images": (16, 16, 1), "sequences": (20, 5)}
    flows = sorted((Path(__file__).resolve().parents[1] / "flows").glob("*.yaml"))
    assert {"jet_mlp.yaml", "jet_cnn.yaml", "jet_cnn_rtl.yaml", "jet_gru.yaml", "jet_lstm.yaml"} <= {f.name for f in flows}
    for path in flows:
        flow = load_flow(path)
        shape = shapes[flow.data.representation]
        model = create_model(flow.model, shape, 5, flow.quantization)
        assert sum(p.numel() for p in model.parameters()) > 0, path.name
