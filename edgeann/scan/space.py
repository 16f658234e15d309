"""Scan space files: which flow keys a scan varies, what it optimizes and which constraints a design must meet.

A space file is YAML loaded into typed objects that reject unknown keys, like a flow::

    parameters:                              # flow key path -> choices, or an int / float range
      quantization.weight_bits: {type: int, low: 3, high: 8}
      quantization.activation_bits: {choices: [4, 6, 8]}
      pruning.target_sparsity: {type: float, low: 0.3, high: 0.8, step: 0.1}
      model.hidden: {choices: [[64, 32, 32], [32, 16], [16]]}
    objectives: [{maximize: accuracy}, {minimize: bops}]
    constraints: ["bops <= 50000"]
    sampler: tpe                             # tpe, nsga2 or random
    seed: 0

Every value a dimension can take is checked against the flow schema before a trial starts
(:func:`check_against_flow`): the flow is loaded with each dimension at its extremes, so an unknown key
path or a value the flow would reject stops the scan with the key named.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from edgeann.errors import EdgeannError
from edgeann.scan.costs import COSTS, QUALITIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Choice = Union[bool, int, float, str, list[Any], None]


class Choices(_Strict):
    """One of the listed values (any YAML value, lists too: ``model.hidden``)."""

    choices: list[Choice] = Field(min_length=1, description="the values tried")

    def extremes(self) -> list[Any]:
        return list(self.choices)

    def suggest(self, trial, name: str) -> Any:
        # Optuna stores only scalars: a list choice is stored as its YAML text and read back
        labels = [_label(c) for c in self.choices]
        return yaml.safe_load(trial.suggest_categorical(name, labels)) if any(isinstance(c, list) for c in self.choices) \
            else trial.suggest_categorical(name, self.choices)


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log and step exclude each other")
        return self

    def extremes(self) -> list[int]:
        return [self.low, self.low + (self.high - self.low) // self.step * self.step]

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)


class FloatRange(_Strict):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step exclude each other")
        return self

    def extremes(self) -> list[float]:
        if self.step is None:
            return [self.low, self.high]
        return [self.low, self.low + math.floor((self.high - self.low) / self.step + 1e-9) * self.step]

    def suggest(self, trial, name: str) -> float:
        value = trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        return _tidy(value) if self.step is not None else value


def _tidy(value: float) -> float:
    """0.6 for the 0.6000000000000001 a float step gives (the same point, written as the user would)."""
    return float(f"{value:.12g}")


def _check_range(low, high, log) -> None:
    if high < low:
        raise ValueError(f"high ({high}) is below low ({low})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0 (got {low})")


def _dimension_kind(value: Any) -> str | None:
    """Which kind a dimension is, so that an error speaks of that kind only (``type`` absent: choices)."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return {None: "Choices", "int": "IntRange", "float": "FloatRange"}.get(kind, "IntRange")


Dimension = Annotated[Union[Annotated[Choices, Tag("Choices")], Annotated[IntRange, Tag("IntRange")],
                            Annotated[FloatRange, Tag("FloatRange")]], Discriminator(_dimension_kind)]


def _label(value: Any) -> Any:
    return yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, list) else value


class Objective(_Strict):
    """``{maximize: accuracy}`` or ``{minimize: bops}``."""

    maximize: str | None = None
    minimize: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.maximize is None) == (self.minimize is None):
            raise ValueError("give exactly one of maximize or minimize")
        name = self.maximize or self.minimize
        if name not in QUALITIES and name not in COSTS:
            raise ValueError(f"unknown objective {name!r} (expected one of: {', '.join([*QUALITIES, *COSTS])})")
        return self

    @property
    def name(self) -> str:
        return self.maximize or self.minimize

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*([-+0-9.eE_]+)\s*$")


class Constraint:
    """``bops <= 50000``: a bound on a quality or cost. Strict and non-strict comparisons are the same test
    (Optuna counts a constraint value of exactly 0 as met)."""

    def __init__(self, text: str):
        m = _CONSTRAINT.match(text) if isinstance(text, str) else None
        if not m:
            raise ValueError(f"constraint {text!r}: expected 'name <= number' or 'name >= number'")
        self.text, self.metric, self.op = text.strip(), m.group(1), m.group(2)
        if self.metric not in QUALITIES and self.metric not in COSTS:
            raise ValueError(f"constraint {text!r}: unknown name {self.metric!r} (expected one of: "
                             f"{', '.join([*QUALITIES, *COSTS])})")
        try:
            self.bound = float(m.group(3))
        except ValueError:
            raise ValueError(f"constraint {text!r}: {m.group(3)!r} is not a number") from None

    def violation(self, values: dict[str, float]) -> float:
        """<= 0 when met (Optuna's convention), the distance to the bound otherwise."""
        v = values[self.metric]
        return v - self.bound if self.op in ("<=", "<") else self.bound - v


class Space(_Strict):
    parameters: dict[str, Dimension] = Field(min_length=1, description="flow key path -> choices or a range")
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(maximize="accuracy"), Objective(minimize="bops")],
                                        min_length=1)
    constraints: list[str] = Field(default_factory=list)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0

    @model_validator(mode="after")
    def _constraints_parse(self):
        for text in self.constraints:
            Constraint(text)
        return self

    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint(t) for t in self.constraints]

    def costs(self) -> list[str]:
        """The costs a trial computes: those the objectives and constraints name."""
        names = [o.name for o in self.objectives] + [c.metric for c in self.parsed_constraints()]
        return [n for n in dict.fromkeys(names) if n in COSTS] or ["bops"]

    def suggest(self, trial) -> dict[str, Any]:
        """The trial's values, by key path, in the order of the space file (Optuna's define-by-run)."""
        return {key: dim.suggest(trial, key) for key, dim in self.parameters.items()}


def overrides(values: dict[str, Any]) -> list[str]:
    """Key-path values as ``--set`` texts for :func:`edgeann.config.load_flow`."""
    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            for key, value in values.items()]


def load_space(path: str | Path) -> Space:
    p = Path(path)
    if not p.is_file():
        raise EdgeannError(f"space file {p} not found")
    try:
        tree = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise EdgeannError(f"{p}:{where} malformed YAML: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") from None
    if tree is None:
        raise EdgeannError(f"{p}: the space file is empty (give at least one entry under parameters)")
    if not isinstance(tree, dict):
        raise EdgeannError(f"{p}: expected a mapping (parameters, objectives, constraints), got {type(tree).__name__}")
    for key, dim in (tree.get("parameters") or {}).items() if isinstance(tree.get("parameters"), dict) else ():
        if isinstance(dim, dict) and "type" in dim and dim["type"] not in ("int", "float"):
            raise EdgeannError(f"{p}: parameters.{key}.type: {dim['type']!r}: expected int or float (or a list of "
                               "choices, without type)")
    try:
        return Space.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"] if not (isinstance(x, str) and (x[:1].isupper() or x in ("int", "float")))]
        where = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise EdgeannError(f"{p}: {where}: {msg}") from None


def check_against_flow(space: Space, flow, base_overrides: list[str], space_path: Path) -> None:
    """Load the flow with every dimension at each of its extremes (the others at the flow's values): an unknown
    key path or a value the flow rejects ends here, naming the key, before any trial starts."""
    from edgeann.config import load_flow
    from edgeann.scan.costs import RTL_COSTS

    for key, dim in space.parameters.items():
        for value in dim.extremes():
            try:
                cfg = load_flow(flow, [*base_overrides, *overrides({key: value})])
            except EdgeannError as e:
                raise EdgeannError(f"{space_path}: parameters.{key} = {_label(value)!s}: {e}") from None
            rtl = [c for c in space.costs() if c in RTL_COSTS]
            if rtl and cfg.model.family in ("gru", "lstm"):
                raise EdgeannError(f"{space_path}: the costs {', '.join(rtl)} come from the RTL back end, which does not build "
                                   f"{cfg.model.family.upper()} models (they loop over time with state); use bops")


def check_layer_names(space: Space, flow, base_overrides: list[str], sample_shape, n_classes: int,
                      space_path: Path) -> None:
    """Per-layer keys (``quantization.layers.fc9.weight_bits``) load fine but name layers the model may not have:
    build the model at each extreme and check its layer names, as ``train_run`` would in every trial."""
    from edgeann.config import load_flow
    from edgeann.models import check_layer_names as check_names, create_model

    for key, dim in space.parameters.items():
        if not (key.startswith("model.") or key.startswith("quantization.layers") or key.startswith("pruning.exclude")):
            continue
        for value in dim.extremes():
            cfg = load_flow(flow, [*base_overrides, *overrides({key: value})])
            try:
                quant = cfg.quantization if cfg.quantization.enabled else None
                check_names(create_model(cfg.model, sample_shape, n_classes, quant), cfg.quantization, cfg.pruning)
            except EdgeannError as e:
                raise EdgeannError(f"{space_path}: parameters.{key} = {_label(value)!s}: {e}") from None
