"""The whole ensemble as ONNX (dynamo exporter), checked against PyTorch with onnxruntime."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .manifest import BundleError, sha256
from .model import EnsembleModel

ONNX_TOLERANCE = 1e-4  # max |p_onnx − p_torch| accepted by the ONNX check


def onnx_missing() -> str | None:
    """Why ONNX export cannot run here (a missing package, with the install command), or None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as e:
        return f"ONNX export needs the packages onnx, onnxscript and onnxruntime ({e}); " \
               "install them with `pip install onnx onnxscript onnxruntime`"
    return None

def export_onnx(model: EnsembleModel, path: str | Path, check_images: int = 8) -> dict[str, Any]:
    """Write the whole ensemble (preprocessing, members, mean softmax) to ONNX with the dynamo
    exporter and check onnxruntime's probabilities against PyTorch's (max abs diff ≤ ONNX_TOLERANCE).
    Returns the manifest entry; BundleError if a package is missing or the check fails."""
    missing = onnx_missing()
    if missing:
        raise BundleError(missing)

    path = Path(path)
    model = model.to("cpu").eval()
    c, h, w = model.channels, model.height, model.width
    example = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prev = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            prog = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"],
                                     output_names=["probs"], dynamic_shapes=({0: batch},), verbose=False)
            prog.save(str(tmp))
        except Exception as e:  # the exporter raises many types; the user needs the gist
            tmp.unlink(missing_ok=True)
            raise BundleError(f"ONNX export failed: {str(e).splitlines()[0][:300]}") from None
        finally:
            logging.getLogger("torch.onnx").setLevel(prev)
    os.replace(tmp, path)
    data = path.read_bytes()
    x = torch.rand(check_images, c, h, w, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    x[1] = 1.0
    diff = onnx_max_diff(model, path, x)
    if not diff <= ONNX_TOLERANCE:
        path.unlink(missing_ok=True)
        raise BundleError(f"ONNX check failed: onnxruntime differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE})")
    import onnx

    return {"file": path.name, "sha256": sha256(data), "bytes": len(data),
            "opset": int(max((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                              if o.domain in ("", "ai.onnx")), default=0)),
            "input": {"name": "images", "shape": ["N", c, h, w], "dtype": "float32", "range": [0, 1]},
            "output": {"name": "probs", "shape": ["N", len(model.class_names)]},
            "checked_images": int(len(x)), "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE}

def onnx_max_diff(model: EnsembleModel, onnx_path: str | Path, x: torch.Tensor) -> float:
    """max |onnxruntime(x) − model(x)| (CPU execution provider)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    got = sess.run(["probs"], {"images": x.numpy().astype(np.float32)})[0]
    with torch.no_grad():
        want = model(x).numpy()
    return float(np.abs(got - want).max())
