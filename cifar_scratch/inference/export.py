"""``cifar-scratch export``: a trained run's network as an ONNX model, for any runtime, or its weights as
safetensors under the names of its PyTorch twin.

The model takes float32 pixel values 0-255, NHWC, any batch (``pixels``: [N, H, W, C]) and gives
class probabilities (``probabilities``: [N, classes]): the run's normalisation is its first two nodes,
the softmax its last. Images inside are NCHW, as ONNX's operators want them; each layer kind writes its
own nodes (the ``onnx`` of its record in :mod:`cifar_scratch.kinds.layers`), and a kind without one (a
user layer, say) is refused with its name. The ``onnx`` package is an optional extra (``pip install
onnx``); nothing else imports it.

``--format safetensors`` writes the parameters and batch-norm statistics under the names of the
``state_dict`` of the model's PyTorch twin (:mod:`cifar_scratch.diagnostics.torch_reference`), in its
layout (NCHW kernels, (out, in) dense weights), with the class names and the normalisation in the
file's metadata; it needs PyTorch (to name the twin's tensors) and the ``safetensors`` package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cifar_scratch.data import Normalizer
from cifar_scratch.errors import UsageError, UserError
from cifar_scratch.kinds.layers import LAYER_KINDS
from cifar_scratch.nn.layers import Module
from cifar_scratch.nn.model import Residual, Sequential

#: ONNX operator set: Gelu (opset 20) is the newest operator used; IR version 9 is opset 20's, which
#: runtimes older than the onnx package read (onnx 1.23 would write IR 14 by default).
OPSET, IR_VERSION = 20, 9
INPUT, OUTPUT = "pixels", "probabilities"


def import_onnx():
    try:
        import onnx
    except ImportError:
        raise UsageError("--format onnx needs the onnx package: pip install onnx (or pip install -e '.[export]')") from None
    return onnx


class OnnxGraph:
    """Nodes and weights of an ONNX graph under construction; tracks each tensor's layout (NHWC, NCHW or flat)."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []
        self.layout: dict[str, str] = {}
        self.scope = ""  # the dotted path of the module being written: its weights' names
        self._count = 0

    def add(self, op: str, inputs: list[str], layout: str | None = None, **attributes) -> str:
        """A node ``op`` of ``inputs`` -> its output's name; the output keeps the first input's layout unless given."""
        self._count += 1
        output = f"{self.scope or op}/{op}_{self._count}"
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], **attributes))
        self.layout[output] = layout or self.layout.get(inputs[0], "flat")
        return output

    def constant(self, name: str, array: np.ndarray) -> str:
        """A float32 weight named ``<scope>.<name>`` -> its name."""
        full = f"{self.scope}.{name}" if self.scope else name
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array, np.float32), full))
        return full

    def nchw(self, x: str) -> str:
        """``x`` as NCHW images (a transpose when it is NHWC)."""
        return self.add("Transpose", [x], layout="NCHW", perm=[0, 3, 1, 2]) if self.layout[x] == "NHWC" else x

    def nhwc(self, x: str) -> str:
        """``x`` as NHWC images (a transpose when it is NCHW)."""
        return self.add("Transpose", [x], layout="NHWC", perm=[0, 2, 3, 1]) if self.layout[x] == "NCHW" else x


def model_to_onnx(model: Sequential, normalizer: Normalizer, class_names: list[str], onnx=None):
    """The built ``model`` (eval weights) with ``normalizer`` in front and a softmax behind -> an onnx.ModelProto."""
    onnx = onnx or import_onnx()
    graph = OnnxGraph(onnx)
    graph.layout[INPUT] = "NHWC" if len(model.input_shape) == 3 else "flat"
    graph.scope = "normalize"
    x = graph.add("Sub", [INPUT, graph.constant("mean", normalizer.mean)])
    x = graph.add("Mul", [x, graph.constant("scale", normalizer.scale)])
    x = _write(graph, model, x, "")
    graph.scope = ""
    x = graph.add("Softmax", [x], axis=1)
    graph.nodes[-1].output[0] = OUTPUT
    tensor = onnx.helper.make_tensor_value_info
    inputs = [tensor(INPUT, onnx.TensorProto.FLOAT, ["N", *model.input_shape])]
    outputs = [tensor(OUTPUT, onnx.TensorProto.FLOAT, ["N", len(class_names)])]
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, "cifar_scratch", inputs, outputs, graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="cifar-scratch",
        ir_version=IR_VERSION,
    )
    onnx.helper.set_model_props(proto, {"class_names": json.dumps(class_names), "input": "float32 pixels 0-255, NHWC"})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _write(graph: OnnxGraph, module: Module, x: str, path: str) -> str:
    """Nodes for ``module`` (at dotted ``path``) applied to tensor ``x`` -> the output tensor."""
    if isinstance(module, Sequential):
        y = x
        for child in module.layers:
            y = _write(graph, child, y, f"{path}.{child.name}" if path else child.name)
        if isinstance(module, Residual):
            shortcut = x if module.shortcut is None else _write(graph, module.shortcut, x, f"{path}.shortcut")
            graph.scope = path
            y = graph.add("Add", [graph.nchw(y), graph.nchw(shortcut)] if graph.layout[y] != "flat" else [y, shortcut])
        return y
    kind = next((k for k in LAYER_KINDS.values() if k.user is type(module) or k.module is type(module)), None)
    if kind is None or kind.onnx is None:
        where = f" ({module.config_path})" if module.config_path else ""
        supported = ", ".join(name for name, k in LAYER_KINDS.items() if k.onnx is not None)
        raise UserError(
            f"{path}{where}: the {module.kind} layer has no ONNX mapping; ONNX export writes {supported} and their blocks"
        )
    graph.scope = path
    return kind.onnx(graph, module, x)


def torch_weights(model: Sequential) -> dict[str, np.ndarray]:
    """The model's parameters and buffers under the names and in the layout of its PyTorch twin's ``state_dict``."""
    from cifar_scratch.diagnostics.torch_reference import build_torch_model

    twin, _ = build_torch_model(model, np.float32)
    return {name: value.detach().cpu().numpy().copy() for name, value in twin.state_dict().items()}


def safetensors_bytes(model: Sequential, normalizer: Normalizer, class_names: list[str]) -> bytes:
    """:func:`torch_weights` as a safetensors file, the class names and normalisation in its metadata."""
    try:
        from safetensors.numpy import save
    except ImportError:
        raise UsageError("--format safetensors needs the safetensors package: pip install safetensors") from None
    metadata = {
        "class_names": json.dumps(class_names),
        "normalize": json.dumps({"mean": normalizer.mean.tolist(), "scale": normalizer.scale.tolist()}),
        "input": "float32 (pixels - mean) * scale, NCHW, as the PyTorch twin takes it",
        "producer": "cifar-scratch",
    }
    return save(torch_weights(model), metadata)


FORMATS = {"onnx": "model.onnx", "safetensors": "model.safetensors"}


def export_run(target: Path, out: Path | None = None, notes: list[str] | None = None, fmt: str = "onnx") -> Path:
    """Write the run's best (or the given) checkpoint as ``fmt`` (onnx, safetensors) to ``out`` (default
    ``RUN/export/model.<format>``) -> the path."""
    from cifar_scratch.fileio import atomic_open
    from cifar_scratch.inference.evaluate import locate, restore_run
    from cifar_scratch.runs.folder import RunFolder

    if fmt not in FORMATS:
        raise UsageError(f"--format: onnx or safetensors (got {fmt!r})")
    onnx = import_onnx() if fmt == "onnx" else None
    run_dir, checkpoint = locate(target)
    _, model, normalizer, names = restore_run(run_dir, checkpoint, notes)
    if fmt == "onnx":
        data = model_to_onnx(model, normalizer, names, onnx).SerializeToString()
    else:
        data = safetensors_bytes(model, normalizer, names)
    out = Path(out) if out is not None else RunFolder(run_dir).path / "export" / FORMATS[fmt]
    with atomic_open(out, "wb") as handle:
        handle.write(data)
    return out
