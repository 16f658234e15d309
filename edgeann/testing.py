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


def random_recurrent_layer(rng: np.random.Generator, name: str, src: str, x_type: ir.FixedType, n_in: int, hidden: int,
                           *, cell: str = "gru", max_bits: int = 8, sparsity: float = 0.3,
                           return_sequences: bool = False) -> ir.Recurrent:
    """A GRU or LSTM node (``cell``) with random integer weights and types (2-``max_bits`` bits, random grids)
    and exact tables."""
    kind = {"gru": ir.GRU, "lstm": ir.LSTM}[cell]
    n_gates = len(kind.gates)

    def typed(integer_bits: tuple[int, int]) -> ir.FixedType:
        """Three times in four a type as training finds it (``integer_bits`` range), else any grid."""
        if rng.integers(4):
            width = int(rng.integers(2, max_bits + 1))
            return ir.FixedType(width, width - int(rng.integers(*integer_bits)))
        return random_type(rng, (2, max_bits), signed=True, narrow=False)

    def weights_and_bias(fan_in: int, in_frac: int, prefix: str) -> dict:
        wt = random_type(rng, (2, max_bits), signed=True)
        w = rng.integers(wt.int_min, wt.int_max + 1, size=(n_gates * hidden, fan_in))
        w[rng.random(w.shape) < sparsity] = 0
        # usually on the product grid (as Brevitas puts it), sometimes finer or coarser
        bt = ir.FixedType(int(rng.integers(2, 13)), in_frac + wt.frac + int(rng.choice([0, 0, 0, -2, 1])))
        return {f"w_{prefix}": w, f"w_{prefix}_type": wt, f"b_{prefix}": rng.integers(bt.int_min, bt.int_max + 1, size=n_gates * hidden),
                f"b_{prefix}_type": bt}

    state_type = typed((1, 3))  # [-1, 1) or [-2, 2): the state lies between tanh's extremes
    sig, tanh = ir.sigmoid_type(int(rng.integers(2, max_bits + 1))), ir.tanh_type(int(rng.integers(2, max_bits + 1)))
    kw = {**weights_and_bias(n_in, x_type.frac, "ih"), **weights_and_bias(hidden, state_type.frac, "hh"),
          "state_type": state_type, "sigmoid_type": sig, "tanh_type": tanh, "return_sequences": return_sequences}
    for g in kind.gates:
        kw[f"gate_{g}_type"] = typed((2, 5))  # [-2, 2) .. [-8, 8): where sigmoid and tanh bend
    if cell == "gru":
        kw.update(sigmoid_r_table=ir.activation_table("sigmoid", kw["gate_r_type"], sig),
                  sigmoid_z_table=ir.activation_table("sigmoid", kw["gate_z_type"], sig),
                  tanh_table=ir.activation_table("tanh", kw["gate_n_type"], tanh))
    else:
        kw["cell_type"] = typed((2, 5))
        kw.update({f"sigmoid_{g}_table": ir.activation_table("sigmoid", kw[f"gate_{g}_type"], sig) for g in "ifo"})
        kw.update(tanh_g_table=ir.activation_table("tanh", kw["gate_g_type"], tanh),
                  tanh_c_table=ir.activation_table("tanh", kw["cell_type"], tanh))
    return kind(name, [src], **kw)


def random_gru_layer(rng: np.random.Generator, name: str, src: str, x_type: ir.FixedType, n_in: int, hidden: int,
                     **kw) -> ir.GRU:
    return random_recurrent_layer(rng, name, src, x_type, n_in, hidden, cell="gru", **kw)


def random_gru(rng: np.random.Generator, name: str = "gru", *, max_bits: int = 8, layers: int = 1,
               head: bool | None = None, cell: str = "gru") -> ir.Graph:
    """Input (T, F) -> GRU (or LSTM: ``cell``) x ``layers`` (all but the last return sequences) [-> Dense ->
    Quantize]: T 1-10, F 1-6, H 1-12, every type 2-``max_bits`` bits on a random grid; a head unless ``head``
    is False."""
    steps, n_in = int(rng.integers(1, 11)), int(rng.integers(1, 7))
    x_type = random_type(rng, (2, max_bits))
    nodes: list[ir.Node] = [ir.Input("x", [], shape=(steps, n_in), type=x_type)]
    src, width = "x", n_in
    for k in range(1, layers + 1):
        hidden = int(rng.integers(1, 13))
        layer = random_recurrent_layer(rng, f"{cell}{k}", src, x_type, width, hidden, cell=cell, max_bits=max_bits,
                                       sparsity=float(rng.uniform(0, 0.6)), return_sequences=k < layers)
        nodes.append(layer)
        src, width, x_type = layer.name, hidden, layer.state_type
    if head if head is not None else bool(rng.integers(4)):
        wt = random_type(rng, (2, 8), signed=True)
        n_out = int(rng.integers(1, 6))
        bt = ir.FixedType(int(rng.integers(4, 13)), x_type.frac + wt.frac)
        nodes.append(ir.Dense("fc", [src], weight=rng.integers(wt.int_min, wt.int_max + 1, size=(n_out, width)),
                              weight_type=wt, bias=rng.integers(bt.int_min, bt.int_max + 1, size=n_out), bias_type=bt))
        nodes.append(ir.Quantize("out", ["fc"], type=random_type(rng, (2, max_bits), signed=True)))
        src = "out"
    return ir.Graph(name, nodes, [src])


def random_cnn(rng: np.random.Generator, name: str = "cnn", *, dims: int | None = None, max_bits: int = 8,
               stream: bool = False) -> ir.Graph:
    """A random small channels-last CNN: Input (1-D or 2-D, 1-3 channels) -> 1-2 blocks of Conv (kernel 1-3 per
    axis, stride 1-2, zero padding) [-> BatchNorm] -> Relu [-> MaxPool | AvgPool -> Quantize], sometimes a residual
    block (same-padded Conv -> Add -> Relu) -> Flatten -> Dense [-> Quantize]. Every type 2-``max_bits`` bits
    (weights 2-8) on a random grid, sparsity 0-0.8. ``stream``: pooling strides equal to the window, as hls4ml's
    io_stream pooling needs."""
    d = int(rng.integers(1, 3)) if dims is None else dims
    spatial = tuple(int(s) for s in rng.integers(4, 10, size=d)) if d == 2 else (int(rng.integers(6, 17)),)
    x_type = random_type(rng, (2, max_bits))
    nodes: list[ir.Node] = [ir.Input("x", [], shape=(*spatial, int(rng.integers(1, 4))), type=x_type)]
    graph = lambda: ir.Graph(name, list(nodes), [nodes[-1].name])  # noqa: E731
    src = "x"

    def conv(node_name: str, shape, c_out: int, same: bool) -> ir.Conv:
        kernel = tuple(int(k) for k in rng.integers(1, 4, size=d))
        kernel = tuple(min(k, n) for k, n in zip(kernel, shape[:-1]))
        stride = (1,) * d if same else tuple(int(s) for s in rng.integers(1, 3, size=d))
        if stream and d == 2 and kernel[0] == 1:  # hls4ml's io_stream line buffer ignores a row stride then
            stride = (1, stride[1])
        if same:
            pads = tuple(p for k in kernel for p in ((k - 1) // 2, k - 1 - (k - 1) // 2))
        else:
            pads = tuple(int(p) for p in rng.integers(0, 2, size=2 * d)) if rng.integers(2) else (0,) * (2 * d)
        wt = random_type(rng, (2, 8), signed=True)
        w = rng.integers(wt.int_min, wt.int_max + 1, size=(*kernel, shape[-1], c_out))
        w[rng.random(w.shape) < rng.uniform(0, 0.8)] = 0
        bt = ir.FixedType(int(rng.integers(2, 13)), infos[src].type.frac + wt.frac)
        return ir.Conv(node_name, [src], weight=w, weight_type=wt, bias=rng.integers(bt.int_min, bt.int_max + 1, c_out),
                       bias_type=bt, stride=stride, pads=pads)

    for block in range(1, int(rng.integers(1, 3)) + 1):
        infos = graph().infos()
        nodes.append(conv(f"conv{block}", infos[src].shape, int(rng.integers(1, 5)), same=False))
        src = nodes[-1].name
        if rng.random() < 0.3:
            c = nodes[-1].n_out
            st = random_type(rng, (2, 8), signed=True, narrow=True)
            bt = random_type(rng, (4, 16), signed=True)
            nodes.append(ir.BatchNorm(f"bn{block}", [src], scale=rng.integers(st.int_min, st.int_max + 1, c),
                                      scale_type=st, bias=rng.integers(bt.int_min, bt.int_max + 1, c), bias_type=bt))
            src = nodes[-1].name
        nodes.append(ir.Relu(f"relu{block}", [src], type=random_type(rng, (2, max_bits))))
        src = nodes[-1].name
        shape = graph().infos()[src].shape
        pool = tuple(int(min(p, n)) for p, n in zip(rng.integers(1, 3, size=d), shape[:-1]))
        if rng.random() < 0.6 and max(pool) > 1:
            stride = pool if stream or rng.integers(2) else tuple(int(s) for s in rng.integers(1, 3, size=d))
            if rng.integers(2):
                nodes.append(ir.MaxPool(f"pool{block}", [src], pool=pool, stride=stride))
            else:
                nodes.append(ir.AvgPool(f"pool{block}", [src], pool=pool, stride=stride))
                nodes.append(ir.Quantize(f"pool{block}_q", [nodes[-1].name], type=random_type(rng, (2, max_bits))))
            src = nodes[-1].name
    if rng.random() < 0.4:  # a residual block around a same-padded convolution
        infos = graph().infos()
        entry = src
        nodes.append(conv("res_conv", infos[src].shape, infos[src].shape[-1], same=True))
        nodes.append(ir.Add("res_add", [entry, "res_conv"]))
        nodes.append(ir.Relu("res", ["res_add"], type=random_type(rng, (2, max_bits))))
        src = "res"
    nodes.append(ir.Flatten("flatten", [src]))
    n_flat = graph().infos()["flatten"].shape[0]
    wt = random_type(rng, (2, 8), signed=True)
    bt = ir.FixedType(int(rng.integers(2, 13)), graph().infos()["flatten"].type.frac + wt.frac)
    n_out = int(rng.integers(1, 6))
    nodes.append(ir.Dense("fc", ["flatten"], weight=rng.integers(wt.int_min, wt.int_max + 1, size=(n_out, n_flat)),
                          weight_type=wt, bias=rng.integers(bt.int_min, bt.int_max + 1, size=n_out), bias_type=bt))
    if rng.integers(4):
        nodes.append(ir.Quantize("out", ["fc"], type=random_type(rng, (2, max_bits), signed=True)))
    return graph()


def jet_cnn(seed: int = 0) -> ir.Graph:
    """The jet-image CNN of ``flows/jet_cnn.yaml`` with random weights: 16x16x1 8-bit input -> Conv 3x3 'same' (8)
    -> BatchNorm -> ReLU -> MaxPool 2 -> Conv 3x3 (16) -> ReLU -> MaxPool 2 -> Flatten -> Dense 16 -> ReLU -> Dense 5,
    6-bit weights (~50% pruned) and ReLUs, 8-bit output."""
    rng = np.random.default_rng(seed)
    w6, relu = ir.FixedType(6, 5, narrow=True), ir.FixedType(6, 3, signed=False)
    nodes: list[ir.Node] = [ir.Input("input", [], shape=(16, 16, 1), type=ir.FixedType(8, 5))]

    def weights(shape):
        w = rng.integers(-31, 32, size=shape)
        w[rng.random(shape) < 0.5] = 0
        return w

    def bias(n, in_frac):
        return {"bias": rng.integers(-2000, 2000, n), "bias_type": ir.FixedType(16, in_frac + w6.frac)}

    scale_type = ir.FixedType(6, 4, narrow=True)
    nodes += [ir.Conv("conv1", ["input"], weight=weights((3, 3, 1, 8)), weight_type=w6, pads=(1, 1, 1, 1), **bias(8, 5)),
              ir.BatchNorm("batchnorm1", ["conv1"], scale=rng.integers(8, 32, 8), scale_type=scale_type,
                           bias=rng.integers(-2000, 2000, 8), bias_type=ir.FixedType(16, 5 + w6.frac + scale_type.frac)),
              ir.Relu("relu1", ["batchnorm1"], type=relu), ir.MaxPool("pool1", ["relu1"], pool=(2, 2)),
              ir.Conv("conv2", ["pool1"], weight=weights((3, 3, 8, 16)), weight_type=w6, **bias(16, relu.frac)),
              ir.Relu("relu2", ["conv2"], type=relu), ir.MaxPool("pool2", ["relu2"], pool=(2, 2)),
              ir.Flatten("flatten1", ["pool2"]),
              ir.Dense("fc1", ["flatten1"], weight=weights((16, 144)), weight_type=w6, **bias(16, relu.frac)),
              ir.Relu("relu3", ["fc1"], type=relu),
              ir.Dense("fc2", ["relu3"], weight=weights((5, 16)), weight_type=w6, **bias(5, relu.frac)),
              ir.Quantize("output", ["fc2"], type=ir.FixedType(8, 3))]
    return ir.Graph("jet_cnn", nodes, ["output"])
