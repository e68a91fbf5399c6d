"""Commands of bundles: export (write a bundle of chosen members) and predict (use one)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..export.bundle import load_ensemble
from ..export.images import load_images
from ..export.model import MAX_BATCH
from ..export.write import export_ensemble
from ..runtime import configure_threads
from .common import Command, UserError, add_json, add_run, existing_run, member_list


def _export_args(p: argparse.ArgumentParser) -> None:
    add_run(p)
    p.add_argument("--members", default=None, help="comma-separated member names (default: every finished member)")
    p.add_argument("--out", required=True, help="bundle folder to create")
    p.add_argument("--onnx", action="store_true", help="also write ensemble.onnx (checked with onnxruntime)")
    p.add_argument("--zip", action="store_true", help="also write BUNDLE.zip")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier bundle at --out (and its zip); never the run, a file or another folder")
    p.add_argument("--title", default=None, help="title of the model card")
    p.add_argument("--no-verify", action="store_true",
                   help="skip reloading the bundle and comparing it with the run's saved test probabilities")
    add_json(p)


def _print_export(res, names: list[str]) -> None:
    m = res.manifest
    ens = m["ensemble"]["metrics"]
    print(f"bundle {res.path}: {len(m['members'])} members ({', '.join(names)})")
    print(f"  ensemble test accuracy {ens['accuracy']:.4f}, NLL {ens['nll']:.4f}, ECE {ens['ece']:.4f} "
          f"({m['ensemble']['test_images']} test images)")
    v = m.get("verification", {})
    if v.get("checked"):
        print(f"  reloaded bundle matches the run's saved probabilities: max |Δp| {v['max_abs_diff_vs_run']:.2e} "
              f"on {v['images']} test images")
    elif v:
        print(f"  not verified against the run: {v.get('reason')}")
    if "onnx" in m:
        o = m["onnx"]
        print(f"  ensemble.onnx (opset {o['opset']}): onnxruntime vs PyTorch max |Δp| {o['max_abs_diff']:.2e}")
    if res.zip_path:
        print(f"  zip {res.zip_path}")


def cmd_export(a: argparse.Namespace) -> int:
    run = existing_run(a.run)
    names = member_list(a.members) or run.finished_members()  # default: every finished member
    if not names:
        raise UserError(f"{run.path}: no finished members to export; train one with "
                        f"`python -m nes retrain --run {a.run} --genotype star --name m0`")
    res = export_ensemble(run.path, names, a.out, onnx=a.onnx, make_zip=a.zip, overwrite=a.force, title=a.title,
                          verify=not a.no_verify)
    if a.json:
        print(json.dumps({"path": str(res.path), "zip": str(res.zip_path) if res.zip_path else None,
                          "manifest": res.manifest}, indent=2))
    else:
        _print_export(res, names)
    return 0


def _batch_size(text: str) -> int:
    """--batch-size: an integer from 1 to MAX_BATCH (a huge batch only multiplies the memory)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= n <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"{n} is not from 1 to {MAX_BATCH}")
    return n


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle folder or .zip written by `export`")
    p.add_argument("input", help="an .npz with an 'images' array (uint8 0-255 or float 0-1), or a folder of "
                                 "PNG/JPEG files")
    p.add_argument("--batch-size", type=_batch_size, default=256, metavar=f"1..{MAX_BATCH}",
                   help="images per forward pass (memory grows with it)")
    add_json(p)


def cmd_predict(a: argparse.Namespace) -> int:
    configure_threads()
    model = load_ensemble(a.bundle)
    images, names = load_images(a.input, model.channels, model.height, model.width)
    probs = model.predict(images, a.batch_size)
    names = names or [f"{Path(a.input).name}[{i}]" for i in range(len(probs))]
    top = probs.argmax(1).tolist()
    if a.json:
        print(json.dumps({"bundle": str(a.bundle), "classes": model.class_names, "members": model.member_names,
                          "predictions": [{"input": n, "class": k, "label": model.class_names[k],
                                           "probability": round(float(p[k]), 6),
                                           "probs": [round(float(v), 6) for v in p]}
                                          for n, k, p in zip(names, top, probs)]}, indent=2))
        return 0
    width = max([len(n) for n in names] + [5])
    print(f"{'input':<{width}}  {'class':<16}{'p':>7}")
    for n, k, p in zip(names, top, probs):
        print(f"{n:<{width}}  {model.class_names[k]:<16}{float(p[k]):>7.3f}")
    return 0


COMMANDS = [
    Command("export", "write a bundle of chosen members (manifest, safetensors, model card; --onnx, --zip)",
            _export_args, cmd_export),
    Command("predict", "class probabilities of an exported ensemble for images", _predict_args, cmd_predict),
]
