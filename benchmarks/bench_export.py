"""Export and inference of a bundle, measured side by side: the bundled demo's 3 members.

Times `export_ensemble` without and with ONNX, `load_ensemble` (folder and zip, all checks
included), and ensemble inference on the run's test images with PyTorch (`predict`) and with
onnxruntime on the exported `ensemble.onnx`, at the same thread count.

    python benchmarks/bench_export.py [--run assets/demo] [--threads 2] [--images 2000]

Last line: RESULT export_s=… export_onnx_s=… load_ms=… load_zip_ms=… torch_img_s=… onnx_img_s=… onnx_max_diff=…
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nes.artifacts import read_json  # noqa: E402
from nes.data import load_dataset  # noqa: E402
from nes.export.bundle import load_ensemble  # noqa: E402
from nes.export.write import export_ensemble  # noqa: E402
from nes.layout import RunDir  # noqa: E402


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "assets" / "demo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    names = RunDir(run).list_members()
    cfg = read_json(run / "members" / names[0] / "config.json")
    ds = load_dataset(cfg["dataset"], cfg.get("data_dir"), "cpu", 100, a.images, download=False)
    x = ds.test_x
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        export_s, _ = timed(lambda: export_ensemble(run, names, d / "plain", make_zip=True, verify=False))
        onnx_s, res = timed(lambda: export_ensemble(run, names, d / "onnx", onnx=True, verify=False))
        load_s, model = timed(lambda: load_ensemble(d / "plain"), 5)
        load_zip_s, _ = timed(lambda: load_ensemble(d / "plain.zip"), 5)
        model.predict(x[:64])
        torch_s, p_torch = timed(lambda: model.predict(x), 3)

        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        sess = ort.InferenceSession(str(d / "onnx" / "ensemble.onnx"), so, providers=["CPUExecutionProvider"])
        xf = (x.numpy().astype(np.float32) / 255.0)

        def run_onnx() -> np.ndarray:
            return np.concatenate([sess.run(["probs"], {"images": xf[i:i + 256]})[0] for i in range(0, len(xf), 256)])

        run_onnx()
        onnx_run_s, p_onnx = timed(run_onnx, 3)
        diff = float(np.abs(p_onnx - p_torch.numpy()).max())
        acc = float((p_torch.argmax(1) == ds.test_y).float().mean())
        size = sum(f.stat().st_size for f in (d / "plain").rglob("*") if f.is_file())
    n = len(x)
    print(f"run {run.name}: {len(names)} members ({', '.join(names)}), {cfg['dataset']}, {n} test images, "
          f"{a.threads} threads, torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"export (verify off):         {export_s:7.2f} s   bundle {size / 1e3:.0f} kB")
    print(f"export with ONNX + check:    {onnx_s:7.2f} s   onnx check max |Δp| {res.manifest['onnx']['max_abs_diff']:.1e}")
    print(f"load_ensemble folder / zip:  {1000 * load_s:7.1f} ms / {1000 * load_zip_s:.1f} ms (schema, hashes, shapes)")
    print(f"predict, PyTorch:            {n / torch_s:9,.0f} img/s   accuracy {100 * acc:.2f} %")
    print(f"predict, onnxruntime:        {n / onnx_run_s:9,.0f} img/s   max |Δp| vs PyTorch {diff:.1e}")
    print(f"RESULT export_s={export_s:.2f} export_onnx_s={onnx_s:.2f} load_ms={1000 * load_s:.1f} "
          f"load_zip_ms={1000 * load_zip_s:.1f} torch_img_s={n / torch_s:.0f} onnx_img_s={n / onnx_run_s:.0f} "
          f"onnx_max_diff={diff:.2e}")


if __name__ == "__main__":
    main()
