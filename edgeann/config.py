"""Flow files: YAML in ``flows/`` loaded into typed, validated, frozen objects.

Every section rejects unknown keys and says what it expected, with the file and the key path.
Command-line overrides (``--set key.path=value`` and the shortcuts ``--epochs``, ``--device``)
are applied to the YAML tree before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeann.errors import EdgeannError

FLOWS_DIR = Path(__file__).resolve().parent.parent / "flows"
DEFAULT_FLOW = "jet_mlp"

# Bit widths the whole chain (Brevitas -> ONNX -> ap_fixed) represents exactly.
WEIGHT_BITS = (2, 8)  # weights are stored as int8 in the ONNX reference
ACT_BITS = (2, 16)  # activations, input and output: int8/uint8, or int16/uint16 above 8 bits
BIAS_BITS = (4, 32)  # biases are stored as int32


class Section(BaseModel):
    """A flow section: unknown keys are errors, values are frozen once validated.

    Two spellings the command line invites are accepted and stored canonically: choices in any case
    (``--set fpga.strategy=resource`` like ``--strategy resource``) and lists without brackets
    (``--set model.hidden=64,32``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _canonical_spelling(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fixed = dict(data)
        for name, field in cls.model_fields.items():
            if name in fixed:
                fixed[name] = _canonical_value(field.annotation, fixed[name])
        return fixed


def _strip_annotated(annotation: Any) -> Any:
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _literal_choices(annotation: Any) -> list[str]:
    """The string choices a field accepts (its ``Literal`` values, also inside a union)."""
    annotation = _strip_annotated(annotation)
    if get_origin(annotation) is Literal:
        return [a for a in get_args(annotation) if isinstance(a, str)]
    if _is_union(annotation):
        return [c for arg in get_args(annotation) for c in _literal_choices(arg)]
    return []


def _canonical_value(annotation: Any, value: Any) -> Any:
    annotation = _strip_annotated(annotation)
    if isinstance(value, str):
        by_lower = {c.lower(): c for c in _literal_choices(annotation)}
        if value.lower() in by_lower and value not in by_lower.values():
            return by_lower[value.lower()]
        if "," in value and not by_lower and _accepts_list(annotation):
            try:
                return yaml.safe_load(f"[{value}]")
            except yaml.YAMLError:
                return value
        return value
    tags = _union_members(annotation)
    if isinstance(value, dict) and tags:  # a tagged section: the tag decides the class before the class sees it
        by_lower = {t.lower(): t for t in tags}
        for key in ("source", "family", "type"):
            tag = value.get(key)
            if isinstance(tag, str) and tag.lower() in by_lower:
                return {**value, key: by_lower[tag.lower()]}
    if isinstance(value, list) and get_origin(annotation) is list:
        return [_canonical_value(get_args(annotation)[0], v) for v in value]
    return value


def _accepts_list(annotation: Any) -> bool:
    annotation = _strip_annotated(annotation)
    if get_origin(annotation) is list:
        return True
    return _is_union(annotation) and any(_accepts_list(a) for a in get_args(annotation))


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _bits(lo_hi: tuple[int, int], default: int, what: str):
    return Field(default, ge=lo_hi[0], le=lo_hi[1], description=f"{what} bit width ({lo_hi[0]}-{lo_hi[1]})")


# ---------------------------------------------------------------------------------------------
# data


class Split(Section):
    """Fractions of the samples for training, validation (early stopping) and the final test."""

    train: float = Field(0.6, gt=0, lt=1, description="fraction for training")
    val: float = Field(0.2, gt=0, lt=1, description="fraction for validation (best epoch, early stopping)")
    test: float = Field(0.2, gt=0, lt=1, description="fraction for the final test (metrics, verification vectors)")

    @model_validator(mode="after")
    def _sums_to_one(self):
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1 (got {self.train + self.val + self.test:g})")
        return self


class DataBase(Section):
    split: Split = Split()
    standardize: bool = Field(True, description="scale features to zero mean, unit variance (fit on train)")
    max_samples: int | None = Field(None, gt=0, description="use at most this many samples (after shuffling)")


class SyntheticData(DataBase):
    """A small deterministic 16-feature, 5-class problem for tests and quick checks."""

    source: Literal["synthetic"]
    n_samples: int = Field(20000, ge=100, description="samples generated")
    n_features: int = Field(16, ge=2, le=256, description="features per sample (per step for sequences)")
    n_classes: int = Field(5, ge=2, le=32, description="classes")
    sequence_length: int | None = Field(None, ge=1, le=256, description="sequences of this many steps of n_features "
                                        "(for the gru family) instead of flat vectors")


class ArrayFileData(DataBase):
    """Named arrays in a ``.npz`` or HDF5 file."""

    source: Literal["npz", "hdf5"]
    path: Path
    features: str = Field("x", description="name of the feature array (N, ...)")
    labels: str = Field("y", description="name of the integer label array (N,)")
    classes: list[str] | None = Field(None, description="class names, in label order")


class OpenMLData(DataBase):
    """The hls4ml jet data set from OpenML (needs internet the first time; cached afterwards)."""

    source: Literal["openml"]
    name: str = Field("hls4ml_lhc_jets_hlf", description="OpenML data set name")
    cache_dir: Path = Field(Path("~/.cache/edgeann/openml"), description="download cache")


class JetsData(DataBase):
    """Jets generated offline with Pythia 8 + FastJet (:mod:`edgeann.data.jets`), cached on disk.

    The file is generated on first use (``n_per_class`` jets of each of g, q, W, Z, top) and
    reused afterwards; ``representation`` picks what the model sees: the 16 hls4ml features,
    the jet images or the constituent sequences.
    """

    source: Literal["jets"]
    representation: Literal["features", "images", "sequences"] = Field(
        "features", description="what the model sees: 16 high-level features, jet images (H, W, 1), constituent sequences")
    n_per_class: int = Field(5000, ge=1, le=10_000_000, description="jets generated per class (g, q, W, Z, top)")
    generator_seed: int = Field(1, ge=0, description="Pythia seed of the generated file")
    workers: int = Field(2, ge=1, le=256, description="processes generating jets")
    image_size: int = Field(16, ge=4, le=128, description="jet image pixels per side")
    n_constituents: int = Field(20, ge=1, le=200, description="constituents per sequence (hardest first)")
    path: Path | None = Field(None, description="an existing jet file from `edgeann data generate jets`; unset: the "
                                                "cache file $EDGEANN_CACHE/jets/<settings>.h5, generated on first use")

    def file(self) -> Path:
        """The cache file: one per generator setting, shared by every flow and run on the machine."""
        if self.path is not None:
            return expand(self.path)
        cache = expand(Path(os.environ.get("EDGEANN_CACHE", "~/.cache/edgeann")))
        return cache / "jets" / (f"jets_n{self.n_per_class}_seed{self.generator_seed}_img{self.image_size}"
                                 f"_seq{self.n_constituents}.h5")


DataConfig = Annotated[Union[SyntheticData, ArrayFileData, OpenMLData, JetsData], Field(discriminator="source")]

# ---------------------------------------------------------------------------------------------
# model


class MLPConfig(Section):
    """Fully connected network: input -> hidden layers with ReLU -> one output per class."""

    family: Literal["mlp"]
    hidden: list[Annotated[int, Field(gt=0, le=4096)]] = Field(default_factory=lambda: [64, 32, 32], min_length=0,
                                                               description="hidden layer widths (fc1, fc2, ...)")


# CNN: a list of layers, each a small typed section told apart by its ``type``

_Extent = Annotated[int, Field(ge=1, le=64)]
Size = Union[_Extent, Annotated[list[_Extent], Field(min_length=1, max_length=2)]]  # one for every axis, or one per axis


def _is_power_of_two(size) -> bool:
    area = size if isinstance(size, int) else math.prod(size)
    return area & (area - 1) == 0


class ConvLayer(Section):
    """A convolution with ``filters`` output channels. ``padding``: ``valid`` (none), ``same`` (output as large
    as the input, stride 1; an odd total is padded one more at the end) or a number of zeros on both sides."""

    type: Literal["conv"]
    filters: int = Field(gt=0, le=1024, description="output channels")
    kernel: Size = Field(3, description="kernel size: one for every axis or one per axis")
    stride: Size = Field(1, description="stride: one for every axis or one per axis")
    padding: Union[Literal["valid", "same"], Annotated[int, Field(ge=0, le=32)], list[Annotated[int, Field(ge=0, le=32)]]] = "valid"

    @model_validator(mode="after")
    def _same_needs_stride_one(self):
        if self.padding == "same" and self.stride not in (1, [1], [1, 1]):
            raise ValueError(f"padding 'same' needs stride 1 (got {self.stride}); pad with a number instead")
        return self


class PoolLayer(Section):
    """Max or average pooling over ``size`` windows moved by ``stride`` (default: ``size``), without padding.
    Average pooling needs a window area that is a power of two, so the mean is exact."""

    type: Literal["max_pool", "avg_pool"]
    size: Size = Field(2, description="window size: one for every axis or one per axis")
    stride: Size | None = Field(None, description="window stride (default: size)")

    @model_validator(mode="after")
    def _exact_mean(self):
        if self.type == "avg_pool" and not _is_power_of_two(self.size):
            raise ValueError(f"avg_pool size {self.size}: the window area must be a power of two (2, 4, 8, ...)")
        return self


class ReluLayer(Section):
    """A ReLU quantized with the activation bits of the weighted layer before it."""

    type: Literal["relu"]


class BatchNormLayer(Section):
    """Batch normalization, kept as a fixed-point ``x * s + t`` per channel (weight and bias bits of its name)."""

    type: Literal["batchnorm"]


class FlattenLayer(Section):
    type: Literal["flatten"]


class DenseLayer(Section):
    type: Literal["dense"]
    units: int = Field(gt=0, le=4096, description="outputs")


class ResidualLayer(Section):
    """``activation(x + layers(x))``: a skip connection; the layers must keep the shape of their input."""

    type: Literal["residual"]
    layers: list["CNNLayer"] = Field(min_length=1, description="layers that keep the shape of their input")
    activation: Literal["relu", "none"] = Field("relu", description="after the sum")


CNNLayer = Annotated[
    Union[ConvLayer, PoolLayer, ReluLayer, BatchNormLayer, FlattenLayer, DenseLayer, ResidualLayer],
    Field(discriminator="type"),
]
ResidualLayer.model_rebuild()


class CNNConfig(Section):
    """Convolutional network on channels-last samples, (height, width, channels) for 2-D convolutions or
    (length, channels) for 1-D: ``layers`` in order, then a dense layer with one output per class."""

    family: Literal["cnn"]
    layers: list[CNNLayer] = Field(min_length=1, description="the layers in order (conv1, bn1, relu1, pool1, fc1, ...)")


class RecurrentConfig(Section):
    """Recurrent network on sequences (steps, features): recurrent layers (``hidden``: one state size per layer;
    all but the last pass their whole sequence on), the last state -> ``dense`` layers with ReLU -> one output
    per class. Weights, biases and the state take the layer's bits from ``quantization``
    (``layers: {gru1: {...}}``; the state uses ``activation_bits``); ``gate_bits`` and ``table_bits`` set
    the activation tables (see :mod:`edgeann.models.recurrent`)."""

    hidden: list[Annotated[int, Field(gt=0, le=256)]] = Field(default_factory=lambda: [16], min_length=1, max_length=4)
    dense: list[Annotated[int, Field(gt=0, le=4096)]] = Field(default_factory=list, description="ReLU layer widths after the last state")
    gate_bits: int = Field(8, ge=2, le=12, description="gate pre-activation (and LSTM cell) bits: the index of a "
                                                       "2^bits-entry sigmoid/tanh table")
    table_bits: int = Field(8, ge=2, le=16, description="sigmoid and tanh output bits (ap_ufixed<b,0> and ap_fixed<b,1>)")


class GRUConfig(RecurrentConfig):
    """GRU layers (see :class:`RecurrentConfig`)."""

    family: Literal["gru"]


class LSTMConfig(RecurrentConfig):
    """LSTM layers (see :class:`RecurrentConfig`); the cell state uses ``gate_bits`` (it indexes the tanh table)."""

    family: Literal["lstm"]


ModelConfig = Annotated[Union[MLPConfig, CNNConfig, GRUConfig, LSTMConfig], Field(discriminator="family")]

# ---------------------------------------------------------------------------------------------
# quantization


class LayerQuant(Section):
    """Per-layer bit widths; unset values fall back to the section defaults."""

    weight_bits: int | None = _bits(WEIGHT_BITS, None, "weight")
    bias_bits: int | None = _bits(BIAS_BITS, None, "bias")
    activation_bits: int | None = _bits(ACT_BITS, None, "activation")


class QuantConfig(Section):
    """Fixed-point quantization: every scale is a power of two, so every value is an ap_fixed.

    Activations, input and output truncate (round toward minus infinity) and saturate; weights
    and biases are rounded to nearest once, when they are frozen into integers.
    """

    enabled: bool = Field(True, description="false trains the float twin of the network (a baseline; no firmware)")
    input_bits: int = _bits(ACT_BITS, 8, "input")
    weight_bits: int = _bits(WEIGHT_BITS, 6, "weight")
    bias_bits: int = _bits(BIAS_BITS, 16, "bias")
    activation_bits: int = _bits(ACT_BITS, 6, "activation")
    output_bits: int = _bits(ACT_BITS, 8, "output")
    layers: dict[str, LayerQuant] = Field(default_factory=dict, description="per-layer overrides by layer name")

    def for_layer(self, name: str) -> LayerQuant:
        """The bit widths of one layer, overrides applied."""
        o = self.layers.get(name, LayerQuant())
        return LayerQuant(
            weight_bits=o.weight_bits or self.weight_bits,
            bias_bits=o.bias_bits or self.bias_bits,
            activation_bits=o.activation_bits or self.activation_bits,
        )


# ---------------------------------------------------------------------------------------------
# pruning


class PruneConfig(Section):
    """Magnitude pruning as a regularizer during quantization-aware training.

    ``iterative``: the "Ps and Qs" recipe: remove ``step`` of the original weights at a time
    (globally smallest magnitude), retraining in between (``finetune``, or ``lottery``: rewind
    the surviving weights to their initial values). ``polynomial``: sparsity follows
    s(t) = s_f (1 - (1 - t)^3) between ``start`` and ``end``, updated every ``update_every`` steps.
    ``start``/``end`` are fractions of the training epochs, so shorter runs keep the schedule.
    """

    method: Literal["none", "iterative", "polynomial"] = Field("none", description="pruning schedule")
    target_sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of weights removed at the end")
    step: float = Field(0.1, gt=0.0, lt=1.0, description="iterative: fraction removed per pruning step")
    start: float = Field(0.1, ge=0.0, lt=1.0, description="first pruning, as a fraction of the epochs")
    end: float = Field(0.7, gt=0.0, le=1.0, description="target sparsity reached, as a fraction of the epochs")
    rewind: Literal["finetune", "lottery"] = Field("finetune", description="iterative: keep training the weights, or rewind them to their initial values")
    update_every: int = Field(20, ge=1, description="optimizer steps between polynomial mask updates")
    exclude: list[str] = Field(default_factory=list, description="layer names never pruned")

    @model_validator(mode="after")
    def _order(self):
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must come after start ({self.start})")
        if self.method != "none" and self.target_sparsity == 0.0:
            raise ValueError(f"method {self.method!r} needs a target_sparsity in (0, 1)")
        return self


# ---------------------------------------------------------------------------------------------
# training


class EarlyStopping(Section):
    """Stop after ``patience`` epochs without a lower validation loss, once the target sparsity is reached."""

    patience: int = Field(10, ge=1, description="epochs without validation-loss improvement")
    min_delta: float = Field(0.0, ge=0.0, description="smallest validation-loss decrease that counts as improvement")


class TrainConfig(Section):
    """Optimizer, learning-rate schedule and early stopping of quantization-aware training."""

    epochs: int = Field(30, ge=1, le=100000, description="training epochs (--epochs)")
    batch_size: int = Field(1024, ge=1, description="samples per optimizer step")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="optimizer")
    lr: float = Field(3e-3, gt=0, le=10, description="initial learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    schedule: Literal["constant", "cosine", "step", "plateau"] = Field("cosine", description="learning-rate schedule over the epochs")
    step_epochs: int = Field(10, ge=1, description="'step' schedule: epochs between decays")
    gamma: float = Field(0.5, gt=0, lt=1, description="'step'/'plateau' schedule: decay factor")
    l1: float = Field(0.0, ge=0, description="L1 penalty on weights")
    l2: float = Field(0.0, ge=0, description="L2 penalty on weights")
    early_stopping: EarlyStopping | None = Field(EarlyStopping(), description="stop when the validation loss stops improving at the target sparsity; null: never")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    compile: Literal["auto"] | bool = Field("auto", description="train through torch.compile once the activation quantizers' statistics are collected (--set training.compile=true); auto: when the run has enough steps to repay the compilation and a C++ compiler is present")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {v!r}")


# ---------------------------------------------------------------------------------------------
# fpga


class FpgaConfig(Section):
    """Firmware options (`edgeann export --fpga`, `edgeann run`); the command-line options override them."""

    backend: Literal["Vitis", "Vivado"] = Field("Vitis", description="hls4ml back end (--backend)")
    io_type: Literal["io_parallel", "io_stream"] = Field("io_parallel", description="io_parallel: all values at once; io_stream: one pixel per cycle (CNNs)")
    strategy: Literal["Latency", "Resource"] = Field("Latency", description="hls4ml strategy")
    reuse_factor: int = Field(1, ge=1, description="multiplications per multiplier (1: fully parallel)")
    clock_period: float = Field(5.0, gt=0, description="ns")
    part: str = Field("xcvu13p-flga2577-2-e", description="FPGA part")


# ---------------------------------------------------------------------------------------------
# the flow


class Flow(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the flow's name (default: the file name): runs/<name>")
    seed: int = Field(0, description="seed of the data split, initialisation and shuffling")
    data: DataConfig
    model: ModelConfig
    quantization: QuantConfig = QuantConfig()
    pruning: PruneConfig = PruneConfig()
    training: TrainConfig = TrainConfig()
    fpga: FpgaConfig = FpgaConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# loading


def resolve_flow_path(flow: str | Path | None) -> Path:
    """A path as given, or the name of a flow in ``flows/`` (the built-in default when None)."""
    if flow is None:
        flow = DEFAULT_FLOW
    p = Path(flow)
    if p.exists():
        return p
    for candidate in (Path("flows") / f"{flow}.yaml", FLOWS_DIR / f"{flow}.yaml", FLOWS_DIR / str(flow)):
        if candidate.is_file():
            return candidate
    raise EdgeannError(f"flow file {flow} not found (give a path or the name of a flow in {FLOWS_DIR})")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is read as YAML (numbers, lists…)."""
    if "=" not in text:
        raise EdgeannError(f"--set {text!r}: expected key.path=value")
    key, _, raw = text.partition("=")
    path = [k for k in key.strip().split(".")]
    if not all(path):
        raise EdgeannError(f"--set {text!r}: empty key in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def _apply_override(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for k in path[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise EdgeannError(f"--set {'.'.join(path)}: {k} is not a section")
        node = nxt
    node[path[-1]] = value


def _union_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """The classes of a discriminated union section, by tag (``{"mlp": MLPConfig, …}``)."""
    members = {}
    if get_origin(annotation) is Annotated:  # e.g. the items of a list of CNN layers
        annotation = get_args(annotation)[0]
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            for name in ("source", "family", "type"):
                if name in arg.model_fields:
                    for tag in get_args(arg.model_fields[name].annotation):
                        members[tag] = arg
    return members


def _walk(loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """Follow a pydantic error location through the Flow: (shown path, section class at the end)."""
    shown: list[str] = []
    model: Any = Flow
    for part in loc:
        if isinstance(model, tuple) and isinstance(part, int):  # an item of a list of sections
            shown.append(str(part))
            model = _union_members(model[1]) or (model[1] if isinstance(model[1], type) else None)
            continue
        if model is None:
            if isinstance(part, int) or not set("-[]'(") & set(part):  # not a label pydantic gives a union branch
                shown.append(str(part))
            continue
        if isinstance(part, str) and part in getattr(model, "model_fields", {}):
            shown.append(part)
            ann = model.model_fields[part].annotation
            members = _union_members(ann)
            if members:
                model = members
            elif isinstance(ann, type) and issubclass(ann, BaseModel):
                model = ann
            elif get_origin(ann) is list and (_union_members(get_args(ann)[0]) or isinstance(get_args(ann)[0], type)):
                model = ("items", get_args(ann)[0])
            else:
                model = None
        elif isinstance(model, dict) and part in model:  # the union tag pydantic inserts
            model = model[part]
        elif isinstance(model, type) and part in _union_members(Union[model, None]):
            pass  # the tag of a one-member union
        else:
            shown.append(str(part))
            model = None
    return shown, model if isinstance(model, type) else None


def _format_error(err: dict, source: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        shown, parent = _walk(err["loc"][:-1])
        where = ".".join(shown + [str(err["loc"][-1])])
        hint = f" (expected one of: {', '.join(parent.model_fields)})" if parent else ""
        return f"{source}: unknown key {where}{hint}"
    shown, _ = _walk(err["loc"])
    where = ".".join(shown) or "(top level)"
    if kind == "missing":
        return f"{source}: missing key {where}"
    got = err.get("input")
    got_s = "" if isinstance(got, (dict, list)) or kind.startswith("union_tag") else f" (got {got!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "list_type" and not isinstance(got, (dict, list)):
        got_s += "; write a list as [a, b] or a,b, one item as [a]"
    return f"{source}: {where}: {msg}{got_s}"


def load_flow(path: str | Path | None = None, overrides: list[str] = (), **shortcuts: Any) -> Flow:
    """Read and validate a flow. ``shortcuts`` are ``epochs=…``, ``device=…`` (``None`` = keep)."""
    p = resolve_flow_path(path)
    try:
        tree = yaml.safe_load(p.read_text())
    except OSError as e:
        raise EdgeannError(f"cannot read flow {p}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise EdgeannError(f"{p}:{where}: malformed YAML: {problem}") from None
    if tree is None:
        raise EdgeannError(f"{p}: the flow file is empty")
    if not isinstance(tree, dict):
        raise EdgeannError(f"{p}: expected a mapping of sections at the top level, got {type(tree).__name__}")
    tree.setdefault("name", p.stem)
    paths = {"epochs": ["training", "epochs"], "device": ["training", "device"]}
    for key, value in shortcuts.items():
        if value is not None:
            _apply_override(tree, paths[key], value)
    for text in overrides:
        _apply_override(tree, *parse_override(text))
    source = str(p) + (" (with overrides)" if overrides or any(v is not None for v in shortcuts.values()) else "")
    try:
        return Flow.model_validate(tree)
    except ValidationError as e:
        errors = e.errors()
        msg = _format_error(errors[0], source)
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise EdgeannError(msg) from None


def expand(path: Path) -> Path:
    return Path(os.path.expanduser(str(path)))
