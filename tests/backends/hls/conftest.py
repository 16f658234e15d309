"""Fixtures for the firmware tests; the graph builders live in :mod:`edgeann.testing`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeann import testing
from edgeann.verify import edge_vectors


@pytest.fixture(scope="session")
def jet_graph():
    return testing.jet_mlp()


@pytest.fixture(scope="session")
def mlps() -> SimpleNamespace:
    """The graph builders (test modules cannot import conftest under --import-mode=importlib)."""
    return SimpleNamespace(
        random_mlp=testing.random_mlp,
        jet_mlp=testing.jet_mlp,
        random_graph=testing.random_graph,
        edge_inputs=lambda graph: edge_vectors(graph, float64=True),
        random_inputs=testing.random_inputs,
    )
