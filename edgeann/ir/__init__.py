"""The fixed-point graph: the one description of a trained network that every back end reads.

The contract, the types, the graph and the dense layers are in :mod:`edgeann.ir.core`; what is
specific to a family lives beside it (:mod:`edgeann.ir.conv`, :mod:`edgeann.ir.recurrent`).
Importing this package registers every node type, so a saved graph of any family loads.
"""

from edgeann.ir.core import (  # noqa: F401
    NODE_TYPES,
    ROUNDINGS,
    Dense,
    FixedType,
    Graph,
    Input,
    Node,
    Quantize,
    Relu,
    TensorInfo,
    quantize_float,
    requantize,
)
from edgeann.ir.conv import Add, AvgPool, BatchNorm, Conv, Flatten, MaxPool  # noqa: F401
from edgeann.ir.threshold import Threshold, affine_form, steps_from_codes  # noqa: F401
from edgeann.ir.recurrent import (  # noqa: F401
    GRU,
    LSTM,
    Recurrent,
    RecurrentArithmetic,
    activation_table,
    sigmoid_type,
    tanh_type,
)
