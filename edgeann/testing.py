"""Graph builders for tests and benchmarks: random integer MLPs with exact types, and the jet MLP.

They live in the package (not in a conftest) so test modules, benchmarks and users can import
them alike.
"""

from __future__ import annotations

import numpy as np

from edgeann import ir
from edgeann.verify import edge_vectors


def random_type(rng: np.random.Generator, bits: tuple[int, int], signed: bool | None = None,
                narrow: bool | None = None) -> ir.FixedType:
    """A random fixed-point type: ``bits`` range of widths, fraction from below zero to beyond the width."""
    signed = bool(rng.integers(2)) if signed is None else signed
    width = int(rng.integers(max(bits[0], 2 if signed else 1), bits[1] + 1))
    frac = int(rng.integers(-3, width + 5))
    narrow = bool(signed and rng.integers(2)) if narrow is None else (narrow and signed)
    return ir.FixedType(width, frac, signed, narrow)


def random_mlp(rng: np.random.Generator, sizes: tuple[int, ...], *, input_type: ir.FixedType,
               weight_types: list[ir.FixedType], act_types: list[ir.FixedType], output_type: ir.FixedType | None,
               sparsity: float = 0.5, bias_bits: int = 10, rounding: str = "floor", name: str = "mlp") -> ir.Graph:
    """Input -> (Dense -> Relu)* -> Dense [-> Quantize]; weights uniform over each weight type's codes.

    ``weight_types`` has one type per Dense, ``act_types`` one per hidden Relu. A fraction ``sparsity`` of
    the weights is zero (pruned). Biases use ``bias_bits`` bits on the grid of the Dense's products.
    ``rounding`` is that of the input, the ReLUs and the output quantizer.
    """
    nodes: list[ir.Node] = [ir.Input("x", [], shape=(sizes[0],), type=input_type, rounding=rounding)]
    prev, prev_t = "x", input_type
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        wt = weight_types[i]
        w = rng.integers(wt.int_min, wt.int_max + 1, size=(n_out, n_in))
        w[rng.random(w.shape) < sparsity] = 0
        bt = ir.FixedType(bias_bits, prev_t.frac + wt.frac)
        b = rng.integers(bt.int_min, bt.int_max + 1, size=n_out)
        nodes.append(ir.Dense(f"fc{i + 1}", [prev], weight=w, weight_type=wt, bias=b, bias_type=bt))
        prev = f"fc{i + 1}"
        if i < len(sizes) - 2:
            nodes.append(ir.Relu(f"relu{i + 1}", [prev], type=act_types[i], rounding=rounding))
            prev, prev_t = f"relu{i + 1}", act_types[i]
    if output_type is not None:
        nodes.append(ir.Quantize("out", [prev], type=output_type, rounding=rounding))
        prev = "out"
    return ir.Graph(name, nodes, [prev])


def jet_mlp(seed: int = 0) -> ir.Graph:
    """The 16-64-32-32-5 jet-tagging MLP: 8-bit input, 6-bit weights (~50% pruned), 6-bit unsigned ReLUs, 8-bit output."""
    return random_mlp(
        np.random.default_rng(seed),
        (16, 64, 32, 32, 5),
        input_type=ir.FixedType(8, 5),
        weight_types=[ir.FixedType(6, 5)] * 4,
        act_types=[ir.FixedType(6, 3, signed=False)] * 3,
        output_type=ir.FixedType(8, 3),
        sparsity=0.5,
        name="jet_mlp",
    )


def random_graph(rng: np.random.Generator, name: str = "rnd", rounding: str = "floor", max_bits: int = 8,
                 max_width: int = 40) -> ir.Graph:
    """A random MLP: depth 1-3, widths 1-``max_width``, weights 2-8 bits, activations 2-``max_bits`` bits
    (signed or not, fractions below zero and beyond the width), sparsity 0-0.9, output Quantize or none."""
    depth = int(rng.integers(1, 4))
    sizes = tuple(int(s) for s in rng.integers(1, max_width + 1, size=depth + 1))
    return random_mlp(
        rng,
        sizes,
        input_type=random_type(rng, (2, max_bits)),
        weight_types=[random_type(rng, (2, 8), signed=True, narrow=False) for _ in range(depth)],
        act_types=[random_type(rng, (2, max_bits)) for _ in range(depth - 1)],
        output_type=random_type(rng, (2, max_bits), signed=True) if rng.integers(4) else None,
        sparsity=float(rng.uniform(0, 0.9)),
        bias_bits=int(rng.integers(2, 13)),
        rounding=rounding,
        name=name,
    )


def random_inputs(graph: ir.Graph, rng: np.random.Generator, n: int) -> np.ndarray:
    """Random inputs spread over (and a little beyond) the input type's range, plus the edge vectors."""
    t = graph.input.type
    span = (t.int_max - t.int_min + 1) * t.scale
    x = rng.uniform(t.int_min * t.scale - span / 4, t.int_max * t.scale + span / 4, size=(n, *graph.input.shape))
    return np.concatenate([x, edge_vectors(graph, float64=True)])
