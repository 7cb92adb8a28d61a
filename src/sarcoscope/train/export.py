"""ONNX export of a trained U-Net, its model card, and loading ONNX weights back into torch.

The grid/window settings go into the ONNX metadata (``onnx_model.METADATA_KEY``) so the
file alone is enough for inference; the architecture goes in too, so ``--init shipped`` can
rebuild the network from the ONNX file without a torch checkpoint being shipped.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarcoscope.errors import ModelError
from sarcoscope.segment.onnx_model import METADATA_KEY, N_COMPARTMENTS, GridSpec
from sarcoscope.train.model import UNet

ARCH_KEY = "sarcoscope_arch"


def export_onnx(
    model: UNet,
    spec: GridSpec,
    path: Path,
    *,
    name: str,
    version: str,
    extra: dict[str, str] | None = None,
) -> str:
    """Write ``model`` as ONNX (dynamic batch/height/width, opset 17); return the file's sha256."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    in_ch = model.down[0][0].in_channels
    dummy = torch.zeros(1, in_ch, 4 * spec.divisor, 4 * spec.divisor)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            dynamo=False,
            input_names=["hu_windows"],
            output_names=["logits"],
            dynamic_axes={"hu_windows": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
            opset_version=17,
        )
    proto = onnx.load(str(tmp))
    meta = {
        METADATA_KEY: spec.to_json(),
        ARCH_KEY: json.dumps({"type": "unet", "in_channels": in_ch, "channels": list(model.channels)}),
        "name": name,
        "version": version,
    }
    meta.update(extra or {})
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "sarcoscope"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    tmp.unlink(missing_ok=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_card(onnx_path: Path, card: dict[str, Any]) -> Path:
    """Write the model card JSON beside the ONNX file (same stem, ``.json``)."""
    out = Path(onnx_path).with_suffix(".json")
    out.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out


def unet_from_onnx(path: Path) -> tuple[UNet, GridSpec]:
    """Rebuild the torch U-Net from an exported ONNX file (for fine-tuning from ``--init shipped``).

    Weights are matched through the exporter's node names (``/down.0/down.0.0/Conv`` → module
    ``down.0.0``), which survive initializer de-duplication.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if ARCH_KEY not in props or METADATA_KEY not in props:
        raise ModelError(f"{path} was not exported by sarcoscope train (no architecture metadata); cannot fine-tune it")
    arch = json.loads(props[ARCH_KEY])
    model = UNet(arch["in_channels"], N_COMPARTMENTS, tuple(arch["channels"]))
    spec = GridSpec.from_json(props[METADATA_KEY])
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:  # de-duplicated constants may live in Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    inits[node.output[0]] = numpy_helper.to_array(attr.t)
    for node in proto.graph.node:  # ... or behind Identity aliases (in graph order)
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    modules = dict(model.named_modules())
    loaded: set[str] = set()
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "BatchNormalization"):
            continue
        module_name = node.name.strip("/").split("/")[-2] if "/" in node.name.strip("/") else ""
        module = modules.get(module_name)
        if module is None:
            raise ModelError(f"{path}: node {node.name!r} matches no layer of the rebuilt network")
        missing = [i for i in node.input[1:] if i and i not in inits]
        if missing:
            raise ModelError(f"{path}: node {node.name!r} takes computed weights {missing}; cannot fine-tune this file")
        values = [inits[i] for i in node.input[1:] if i]
        if node.op_type == "Conv" and module.bias is None and len(values) == 2:
            # the exporter folded the following BatchNorm into this convolution: keep the folded
            # weights and make that BatchNorm an identity plus the folded bias
            parent, _, idx = module_name.rpartition(".")
            bn_name = f"{parent}.{int(idx) + 1}"
            bn = modules.get(bn_name)
            if not isinstance(bn, torch.nn.BatchNorm2d):
                raise ModelError(f"{path}: folded convolution {module_name} has no BatchNorm after it")
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(np.array(values[0])))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(values[1])))
            loaded.update((module_name, bn_name))
            continue
        if node.op_type == "BatchNormalization":
            targets = [module.weight, module.bias, module.running_mean, module.running_var]
        else:
            targets = [module.weight] + ([module.bias] if module.bias is not None else [])
        if len(values) != len(targets):
            raise ModelError(f"{path}: node {node.name!r} has {len(values)} weights, layer needs {len(targets)}")
        with torch.no_grad():
            for t, v in zip(targets, values):
                if tuple(t.shape) != v.shape:
                    raise ModelError(f"{path}: {module_name} weight shape {v.shape} != {tuple(t.shape)}")
                t.copy_(torch.from_numpy(np.array(v)))
        loaded.add(module_name)
    expected = {n for n, m in modules.items() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d))}
    if loaded != expected:
        raise ModelError(f"{path}: layers without weights in the ONNX file: {sorted(expected - loaded)}")
    return model, spec
