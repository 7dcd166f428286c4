"""ONNX interchange: `load` an ONNX file as a clcnn.Model (it runs and trains), `export` any
Model or Sequential to ONNX (opset 17, dynamic batch axis).

    m = clcnn.onnx.load("resnet.onnx", device=dev)          # in eval mode; m.train() to fine-tune
    clcnn.onnx.export(model, "m.onnx", input_shape=(1, 28, 28))

The onnx package is imported only when one of these runs (`pip install "clcnn[onnx]"`).
"""
from ..errors import ClcnnError


class ONNXError(ClcnnError, ValueError):
    """An ONNX file clcnn cannot run (an operator, an attribute value, a dynamic shape,
    non-float32 tensors), or a model that has no ONNX form. Nothing is approximated."""


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ONNXError('ONNX import and export need the onnx package: pip install "clcnn[onnx]"') from None
    return onnx


def load(path, device=None):
    """The clcnn.Model of the ONNX file at path, on device, in eval mode. Layer names are the
    file's node names (characters clcnn refuses in names become "_"), so state_dict keys are
    "<node name>.weight", "<node name>.bias", ... ONNXError names the node, its op_type and
    the attribute of anything clcnn cannot run; CheckpointError names a corrupt file."""
    _require_onnx()
    from .importer import load_model
    return load_model(path, device)


def export(model, path, input_shape=None, metadata=None):
    """Write model (a Model or Sequential) to path as ONNX at opset 17 with a dynamic batch
    axis. input_shape (C, H, W) defaults to the model's Input shape (required for a
    Sequential). metadata (a JSON-able dict, e.g. preprocessing and class names) is stored in
    the file's metadata_props under "clcnn" and read back by `read_metadata`."""
    _require_onnx()
    from .exporter import export_model
    return export_model(model, path, input_shape, metadata)


def read_metadata(path):
    """The metadata dict `export` stored in the file at path ({} when there is none)."""
    _require_onnx()
    from .importer import read_metadata as read
    return read(path)
