"""Symbolic tensors and nodes: what calling a layer on `L.Input(...)` builds.

A `Tensor` stands for the output of one `Node`; a node is one call of a layer on a list of
tensors. A layer object called twice makes two nodes sharing one layer (and so one set of
weights). `Model(inputs, outputs)` walks these nodes back from its outputs; nothing here runs
a kernel.
"""


class Tensor:
    """A symbolic tensor: its per-sample shape (no batch axis) and the node that makes it."""

    def __init__(self, shape, node):
        self.shape = tuple(shape)
        self.node = node

    @property
    def name(self):
        return self.node.name

    def __repr__(self):
        return f"<Tensor {self.name} shape={self.shape}>"


class Node:
    """One call of `layer` on `inputs` (a list of Tensors; empty for an Input)."""

    def __init__(self, layer, inputs, output_shape):
        self.layer = layer
        self.inputs = list(inputs)
        self.output = Tensor(output_shape, self)
        layer.nodes.append(self)

    @property
    def name(self):
        """The layer's name; a shared layer's later calls get ":1", ":2", ... appended."""
        k = self.layer.nodes.index(self)
        return self.layer.name if k == 0 else f"{self.layer.name}:{k}"


def as_tensor_list(value, what):
    """A Tensor or a list/tuple of Tensors as a list; TypeError naming `what` otherwise."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, Tensor):
            raise TypeError(f"{what} must be symbolic tensors (from L.Input(shape) or a layer called "
                            f"on one), got {type(item).__name__}")
    return items


def topological_order(inputs, outputs):
    """The nodes that the outputs need, each after the nodes it reads; ValueError when an
    output needs an Input that is not among `inputs`."""
    order, state = [], {}
    given = {id(t.node) for t in inputs}

    def visit(node, path):
        if state.get(id(node)) == "done":
            return
        if state.get(id(node)) == "open":   # only reachable by mutating a node's inputs by hand
            raise ValueError(f"the graph has a cycle through {node.name}")
        state[id(node)] = "open"
        if not node.inputs and id(node) not in given:
            raise ValueError(f"the model's outputs need input {node.name!r} (shape {node.output.shape}), "
                             f"which is not among Model(inputs=...): add it to the inputs")
        for tensor in node.inputs:
            visit(tensor.node, path + [node])
        state[id(node)] = "done"
        order.append(node)

    for tensor in outputs:
        visit(tensor.node, [])
    for tensor in inputs:
        if id(tensor.node) not in state:
            order.insert(0, tensor.node)    # an input no output uses still gets its place
    return order
