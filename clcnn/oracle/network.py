"""A whole Sequential network in NumPy, from its architecture (the plain list that
clcnn.serialization.architecture gives: [{"type": ..., "config": {...}}, ...]) and a state
dict. Used to check a device model end to end, parameter by parameter."""

from . import activation, conv2d, dense, dropout, pool

_ELEMENTWISE = {"ReLU": "relu", "LeakyReLU": "leaky_relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}


def _same_pads(n_hw, k_hw, s_hw):
    pads = []
    for n, k, s in zip(n_hw, k_hw, s_hw):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def _conv_pads(config, x_shape):
    padding = config["padding"]
    if padding == "same":
        return _same_pads(x_shape[2:], config["kernel_size"], config["stride"])
    return tuple(padding)


def forward(arch, params, x, dropout_state=None):
    """(output, tape); tape holds each layer's input/output for backward. dropout_state maps a
    layer index to its (seed, step) in train mode; Dropout is the identity without it."""
    tape = []
    for index, entry in enumerate(arch):
        kind, cfg = entry["type"], entry["config"]
        w, b = params.get(f"{index}.weight"), params.get(f"{index}.bias")
        x_in, extra = x, None
        if kind == "Conv2D":
            x = conv2d.conv2d_forward(x, w, b, tuple(cfg["stride"]), _conv_pads(cfg, x.shape))
            if cfg.get("activation"):
                x = activation.activation_forward(cfg["activation"], x)
        elif kind == "Dense":
            x = dense.dense_forward(x, w, b)
            if cfg.get("activation"):
                x = activation.activation_forward(cfg["activation"], x)
        elif kind in _ELEMENTWISE:
            x = activation.activation_forward(_ELEMENTWISE[kind], x, cfg.get("negative_slope", 0.01))
        elif kind == "Softmax":
            x = activation.softmax_forward(x)
        elif kind == "MaxPool2D":
            x, extra = pool.maxpool2d_forward(x, tuple(cfg["kernel_size"]), tuple(cfg["stride"]), tuple(cfg["padding"]))
        elif kind == "AvgPool2D":
            x = pool.avgpool2d_forward(x, tuple(cfg["kernel_size"]), tuple(cfg["stride"]), tuple(cfg["padding"]),
                                       cfg.get("count_include_pad", True))
        elif kind == "GlobalAvgPool2D":
            x = pool.global_avgpool2d_forward(x)
        elif kind == "GlobalMaxPool2D":
            x, extra = pool.global_maxpool2d_forward(x)
        elif kind == "Flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "Dropout":
            if dropout_state and index in dropout_state:
                seed, step = dropout_state[index]
                extra = dropout.dropout_mask(x.shape, cfg["p"], seed, step)
                x = x * extra
        else:
            raise ValueError(f"oracle has no layer {kind!r}")
        tape.append((x_in, x, extra))
    return x, tape


def backward(arch, params, tape, gy):
    """(dL/dx, {param name: gradient}) for the upstream gradient gy of the output."""
    grads = {}
    for index in range(len(arch) - 1, -1, -1):
        kind, cfg = arch[index]["type"], arch[index]["config"]
        x_in, y, extra = tape[index]
        w = params.get(f"{index}.weight")
        if kind in ("Conv2D", "Dense") and cfg.get("activation"):
            gy = activation.activation_backward(cfg["activation"], y, gy)
        if kind == "Conv2D":
            gy, grads[f"{index}.weight"], gb = conv2d.conv2d_backward(
                x_in, w, gy, tuple(cfg["stride"]), _conv_pads(cfg, x_in.shape))
        elif kind == "Dense":
            gy, grads[f"{index}.weight"], gb = dense.dense_backward(x_in, w, gy)
        if kind in ("Conv2D", "Dense"):
            if cfg.get("bias", True):
                grads[f"{index}.bias"] = gb
        elif kind in _ELEMENTWISE:
            gy = activation.activation_backward(_ELEMENTWISE[kind], y, gy, cfg.get("negative_slope", 0.01))
        elif kind == "Softmax":
            gy = activation.softmax_backward(y, gy)
        elif kind == "MaxPool2D":
            gy = pool.maxpool2d_backward(gy, extra, x_in.shape)
        elif kind == "AvgPool2D":
            gy = pool.avgpool2d_backward(gy, x_in.shape, tuple(cfg["kernel_size"]), tuple(cfg["stride"]),
                                         tuple(cfg["padding"]), cfg.get("count_include_pad", True))
        elif kind == "GlobalAvgPool2D":
            gy = pool.global_avgpool2d_backward(gy, x_in.shape)
        elif kind == "GlobalMaxPool2D":
            gy = pool.global_maxpool2d_backward(gy, extra, x_in.shape)
        elif kind == "Flatten":
            gy = gy.reshape(x_in.shape)
        elif kind == "Dropout" and extra is not None:
            gy = gy * extra
    return gy, grads


