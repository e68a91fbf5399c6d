"""Dataset shift on the bundled demo: member inference speed, the time of the whole shift table,
and what the demo's ensembles gain per severity.

1. One demo member's inference img/s, side by side in one run: ours (`shift.infer` on the network
   traced and frozen by `shift.inference_network`: batch norms folded into the convolutions;
   channels-last, batch 128, inference mode) against a plain loop (NCHW, autograd on, batch 256).
2. The whole shift table of the demo's 10 members (EdgeNES and DeepEns, 5 each): every test
   corruption × severity, `--images` per condition, in a fresh copy of the demo (no cache),
   timed end to end (`shift_task`: corruptions, inference, scoring, differences).
3. Per severity: each ensemble's NLL gain over its best member (chosen on clean validation) and
   its diversity term D, EdgeNES − DeepEns with member strength and diversity, and the half-widths
   of the intervals the chosen number of images gives.

    python benchmarks/bench_shift.py [--images 1000] [--threads 2] [--out benchmarks/results/bench_shift_cpu.txt]

Last line: RESULT shift_img_s=… plain_img_s=… table_s=… gain_sev0=… gain_sev5=… diversity_sev0=… diversity_sev5=…
(gain: EdgeNES's best member NLL − its ensemble's, so positive = the ensemble is better; diversity: its D).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nes.data import DeviceLoader  # noqa: E402
from nes.layout import RunDir  # noqa: E402
from nes.method.shift import DEFAULT_IMAGES, infer, inference_network, member_network, split_images  # noqa: E402
from nes.method.train import read_member  # noqa: E402
from nes.method.stats import Difference  # noqa: E402
from nes.runs.tasks import shift_task  # noqa: E402


def inference_speed(run: Path, name: str, n: int) -> tuple[float, float]:
    """(ours, plain) images per second of member NAME on n test images, no flip."""
    d = RunDir(run).member(name)
    member = read_member(d)
    cfg = member.config
    x, y, info = split_images(cfg, "test", n, 0)
    dev = torch.device("cpu")
    net = member_network(d, member, info, dev)
    ours = DeviceLoader(x, y, info, 128, train=False, channels_last=True)
    frozen = inference_network(net, next(iter(ours.epoch()))[0])
    infer(frozen, ours, False)  # warm-up
    t = time.perf_counter()
    infer(frozen, ours, False)
    ours_s = time.perf_counter() - t
    plain_net = net.to(memory_format=torch.contiguous_format)
    plain = DeviceLoader(x, y, info, 256, train=False, channels_last=False)
    t = time.perf_counter()
    for xb, _ in plain.epoch():  # what a first attempt looks like: autograd on, NCHW
        torch.softmax(plain_net(xb), 1)
    plain_s = time.perf_counter() - t
    return n / ours_s, n / plain_s


def half(d: dict) -> float:
    return (d["hi"] - d["lo"]) / 2


def report(out: dict, lines: list[str]) -> dict[str, float]:
    ens, dee = out["reports"]["ensemble"], out["reports"].get("deepens_s0")
    lines.append("sev | EdgeNES gain over best (NLL) | D EdgeNES | DeepEns gain | D DeepEns | EdgeNES − DeepEns NLL "
                 "= strength − diversity | ± acc pts (gain CI half-width) | ± NLL")
    figures = {}
    for i, r in enumerate(ens["by_severity"]):
        s, vs = r["severity"], r["vs_best"]
        gain = -vs["nll"]["value"]
        d = dee["by_severity"][i] if dee else None
        diff = ens.get("vs", {}).get("by_severity", [None] * 6)[i]
        text = (f"NLL {Difference.from_dict(diff['nll']).text()} = {diff['mean_member_nll']['value']:+.4f} − "
                f"{diff['diversity_nll']['value']:+.4f}" if diff else "n/a")
        lines.append(f"{s} | {gain:+.4f} | {r['diversity_nll']:.4f} | "
                     f"{-d['vs_best']['nll']['value'] if d else float('nan'):+.4f} | "
                     f"{d['diversity_nll'] if d else float('nan'):.4f} | {text} | "
                     f"{half(vs['accuracy']):.2f} | {half(vs['nll']):.4f}")
        figures[f"gain_sev{s}"], figures[f"diversity_sev{s}"] = gain, r["diversity_nll"]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "assets" / "demo"))
    ap.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the printed lines to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lines = [f"machine: {a.threads} threads, torch {torch.__version__}; run {a.run}; {a.images} images per condition"]
    ours, plain = inference_speed(Path(a.run), RunDir(a.run).list_members()[0], 2000)
    lines.append(f"member inference: ours {ours:.0f} img/s, plain NCHW autograd loop {plain:.0f} img/s ({ours / plain:.2f}×)")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo"
        shutil.copytree(a.run, run, ignore=shutil.ignore_patterns("shift"))  # no cached shift results
        t = time.perf_counter()
        out = shift_task(run, {"baselines": True, "images": a.images, "write": False})
        table_s = time.perf_counter() - t
    members = sum(len(r["members"]) for r in out["reports"].values())
    lines.append(f"shift table: {members} members × 41 conditions × {a.images} images in {table_s:.1f} s")
    figures = report(out, lines)
    lines.append(f"RESULT shift_img_s={ours:.0f} plain_img_s={plain:.0f} table_s={table_s:.1f} "
                 f"gain_sev0={figures['gain_sev0']:.4f} gain_sev5={figures['gain_sev5']:.4f} "
                 f"diversity_sev0={figures['diversity_sev0']:.4f} diversity_sev5={figures['diversity_sev5']:.4f}")
    print("\n".join(lines))
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
