"""The flow key reference is generated from the schema, and docs/flow_keys.md is that text."""

from pathlib import Path

import pytest

from edgeann.config import Flow
from edgeann.errors import EdgeannError
from edgeann.flow_reference import reference_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "flow_keys.md"


def test_docs_are_the_generated_reference():
    assert DOC.read_text() == reference_markdown(), "regenerate with: edgeann keys > docs/flow_keys.md"


def test_every_key_of_every_section_is_listed():
    text = reference_markdown()

    def keys(cls, prefix):
        for name, field in cls.model_fields.items():
            yield f"{prefix}{name}"
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, __import__("pydantic").BaseModel):
                yield from keys(sub, f"{prefix}{name}.")

    for key in keys(Flow, ""):
        assert f"`{key}`" in text, key
    for key in ("data.path", "data.n_per_class", "model.layers[].filters", "model.gate_bits", "pruning.exclude",
                "quantization.layers.<name>.weight_bits", "training.early_stopping.patience", "fpga.reuse_factor"):
        assert f"`{key}`" in text, key


def test_sections_narrow_and_unknown_sections_are_named():
    jets = reference_markdown("data.jets")
    assert "## data (source: jets)" in jets and "(source: npz)" not in jets
    assert "## model.layers[] (type: conv)" in reference_markdown("model.cnn")
    with pytest.raises(EdgeannError, match="no flow section 'fgpa'"):
        reference_markdown("fgpa")
