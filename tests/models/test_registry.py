"""Every registered family honours the same contract (parametrized over the registry)."""

import pytest
import torch

from edgeann.config import CNNConfig, GRUConfig, LSTMConfig, MLPConfig, QuantConfig
from edgeann.errors import EdgeannError
from edgeann.frontends.lowering import lower
from edgeann.models import EdgeModel, create_model, list_models

CONFIGS = {"mlp": (MLPConfig(family="mlp", hidden=[8]), (16,)), "gru": (GRUConfig(family="gru", hidden=[4]), (5, 3)),
           "lstm": (LSTMConfig(family="lstm", hidden=[4]), (5, 3))}
CONFIGS["cnn"] = (
    CNNConfig(family="cnn", layers=[{"type": "conv", "filters": 2}, {"type": "relu"}, {"type": "flatten"}]),
    (5, 4, 1),
)


def test_registry_lists_the_families():
    create_model(MLPConfig(family="mlp"), (16,), 5, None)  # imports the families
    assert set(CONFIGS) <= set(list_models())


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("quantized", [True, False])
def test_contract(family, quantized):
    cfg, shape = CONFIGS[family]
    m = create_model(cfg, shape, 5, QuantConfig() if quantized else None)
    assert isinstance(m, EdgeModel) and m.family == family and m.quantized == quantized
    assert m(torch.zeros(4, *shape)).shape == (4, 5)
    assert m.prunable() and all(p.weight.dim() >= 2 for p in m.prunable().values())
    if quantized:
        m.train()
        m(torch.randn(64, *shape))
        assert lower(m.eval(), "x").outputs


def test_mlp_rejects_non_flat_input():
    with pytest.raises(EdgeannError, match="flat feature vectors"):
        create_model(MLPConfig(family="mlp"), (4, 4), 5, QuantConfig())
