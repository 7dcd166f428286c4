"""A whole clcnn Model in NumPy: its layer calls run through each layer's reference hooks
(clcnn.oracle functions, float64 unless asked otherwise), forward and backward, so a device
model can be checked end to end, parameter by parameter.

Walks `model._calls` as the model does, without fusion: a value read by several calls gets the
sum of their gradients; a layer called several times (shared weights) gets the sum of its
calls' parameter gradients, and its state (BatchNorm running statistics, Dropout steps)
advances once per call, as on the device.
"""
import types

import numpy as np


def snapshot(model, dtype=np.float64):
    """{layer key: {name: value}}: each layer's parameters and buffers, read from the device
    now (floats as `dtype`), and its reference_state (e.g. Dropout's seed and step). Take it
    before the device forward when comparing: that forward advances the state."""
    state, seen = {}, set()
    for layer in model.layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        entry = {}
        for name, tensor in layer.tensors().items():
            value = np.asarray(tensor.value())
            entry[name] = value.astype(dtype) if np.issubdtype(value.dtype, np.floating) else value
        entry.update(layer.reference_state())
        state[model._keys[id(layer)]] = entry
    return state


def forward(model, xs, state=None, training=None):
    """(outputs, run) of the model on inputs xs (one array or a list, one per model input).
    state: a snapshot (default: taken now); it is not changed: run.state holds the state after
    the pass. training: default the model's mode. outputs is one array or a list, as the
    model's own forward returns."""
    xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
    if len(xs) != model._input_count():
        raise TypeError(f"the model takes {model._input_count()} inputs, got {len(xs)}")
    state = {key: dict(entry) for key, entry in (state or snapshot(model)).items()}
    training = model.training if training is None else bool(training)
    values, contexts, used = list(xs), [], []
    for call in model._calls:
        key = model._keys[id(call.layer)]
        ctx = types.SimpleNamespace(updates=None)
        params = state[key]
        values.append(call.layer.reference_forward(ctx, params, *[values[v] for v in call.inputs],
                                                   training=training))
        if ctx.updates:
            state[key] = {**params, **ctx.updates}
        contexts.append(ctx)
        used.append(params)
    run = types.SimpleNamespace(values=values, contexts=contexts, params=used, state=state)
    outputs = [values[v] for v in model._outputs]
    return (outputs[0] if model._single_output else outputs), run


def backward(model, run, gy):
    """(dL/dx, {"<layer key>.<param>": dL/dparam}) for dL/dy (a list for several outputs);
    dL/dx is a list for several inputs. Every trainable parameter gets an entry (zero where
    no call reaches it), as the device's backward writes."""
    gys = list(gy) if isinstance(gy, (list, tuple)) else [gy]
    count = model._input_count()
    grads = [None] * len(run.values)
    for v, g in zip(model._outputs, gys):
        grads[v] = g if grads[v] is None else grads[v] + g
    param_grads = {}
    for position in range(len(model._calls) - 1, -1, -1):
        call = model._calls[position]
        g = grads[count + position]
        if g is None:
            continue     # nothing downstream of this call reaches an output
        gxs, pgrads = call.layer.reference_backward(run.contexts[position], run.params[position], g)
        if call.layer.arity == 1:
            gxs = [gxs]
        key = model._keys[id(call.layer)]
        for name, pg in pgrads.items():
            name = f"{key}.{name}"
            param_grads[name] = pg if name not in param_grads else param_grads[name] + pg
        for v, gx in zip(call.inputs, gxs):
            grads[v] = gx if grads[v] is None else grads[v] + gx
    for layer in model.layers:
        for name, param in layer.params.items():
            name = f"{model._keys[id(layer)]}.{name}"
            if param.trainable and name not in param_grads:
                param_grads[name] = np.zeros(param.shape)
    inputs = [grads[i] for i in range(count)]
    return (inputs[0] if model._single_input else inputs), param_grads
