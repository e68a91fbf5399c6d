"""The bundle's model card (README.md): intended use, data, metrics, limitations."""
from __future__ import annotations

from typing import Any

from ..method.stats import Difference


def _cell(text: str) -> str:
    """A genotype's compact form as a markdown table cell (its '|' separators escaped)."""
    return "`" + text.replace("|", "\\|") + "`" if text else "–"


def pct(v: Any) -> str:
    return f"{100 * v:.2f} %" if isinstance(v, (int, float)) else "–"


def num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "–"


def _origin(m: dict[str, Any]) -> str:
    """A member's λ with the hypernetwork (regularizer) it was sampled from: λ values of different
    regularizers mean different things."""
    lam, reg = m.get("lam"), m.get("regularizer")
    if lam is None:
        return "–"
    return f"{lam:g} ({reg})" if reg else f"{lam:g}"


def _member_rows(man: dict[str, Any]) -> str:
    """The metrics table's rows, one per member."""
    return "\n".join(
        f"| {m['name']} | {_origin(m)} | {m.get('seed', '–')} | "
        f"{_cell(m.get('compact', ''))} | {pct(m.get('metrics', {}).get('test_accuracy'))} | "
        f"{num(m.get('metrics', {}).get('test_nll'))} | {m.get('num_parameters', '–')} |"
        for m in man["members"])


def _training_data(ds: dict[str, Any]) -> str:
    """How many training images the members saw: the run's `limit`, or all of the training set."""
    n = ds.get("train_images")
    if isinstance(n, int) and not isinstance(n, bool):
        return f"{n} training images of {ds['name']} (a fixed subset, part of it held out for validation)"
    return f"all the training images of {ds['name']} (part of them held out for validation)"


def _onnx_line(man: dict[str, Any]) -> str:
    ds, onnx = man["dataset"], man.get("onnx")
    if not onnx:
        return ""
    inp = ds["input"]
    return (f"- `ensemble.onnx`: the whole ensemble (input `images` float32 [N, {inp['channels']}, "
            f"{inp['height']}, {inp['width']}] in [0, 1], output `probs` [N, {ds['num_classes']}]); checked "
            f"against PyTorch on {onnx['checked_images']} images, max |Δp| = {onnx['max_abs_diff']:.2e}.\n")


def _gain_line(ens: dict[str, Any]) -> str:
    """The ensemble against its best member, with the paired bootstrap interval over test images."""
    vs = ens.get("vs_best_member")
    if not isinstance(vs, dict) or not all(isinstance(vs.get(k), dict) for k in ("accuracy", "nll")):
        return ""
    try:
        acc, nll = Difference.from_dict(vs["accuracy"]), Difference.from_dict(vs["nll"])
    except (KeyError, TypeError, ValueError):
        return ""
    return (f"\nAgainst its best member ({_cell(str(vs.get('best_member', '?')))}, chosen by validation NLL): "
            f"accuracy {acc.text()}, NLL {nll.text()}; paired bootstrap over the {acc.n} test images. "
            f"\"Within noise\" means the test set cannot tell the two apart.\n")


def _calibration_line(ens: dict[str, Any]) -> str:
    """Temperature scaling fitted on the validation split, as a sentence ("" when absent)."""
    cal = ens.get("calibrated")
    if not isinstance(cal, dict) or not all(isinstance(cal.get(k), (int, float)) for k in ("temperature", "nll", "ece")):
        return ("\nNo temperature scaling: too few validation images to fit T, or the members were validated on "
                "different images; use the probabilities as they are.\n")
    caveat = f" Caveat: {cal['warning']}." if isinstance(cal.get("warning"), str) else ""
    return (f"\nTemperature scaling (one T fitted on the validation split): T = {cal['temperature']:.3f} gives test "
            f"NLL {cal['nll']:.4f} and ECE {cal['ece']:.4f}, accuracy unchanged; apply it as softmax(log p / T) "
            f"to the ensemble's probabilities p.{caveat}\n")


def _shift_lines(ens: dict[str, Any]) -> str:
    """The ensemble under dataset shift, per severity ("" when the run had no shift report)."""
    sh = ens.get("shift")
    if not isinstance(sh, dict) or not isinstance(sh.get("by_severity"), list):
        return ""
    rows = "\n".join(f"| {r.get('severity')} | {pct(r.get('accuracy'))} | {num(r.get('nll'))} | {num(r.get('ece'))} | "
                     f"{num(r.get('ece_calibrated'))} | {num(r.get('diversity_nll'))} |"
                     for r in sh["by_severity"] if isinstance(r, dict))
    return (f"\n## Under dataset shift\nThe test images corrupted by {_cell(', '.join(map(str, sh.get('corruptions', []))))} "
            f"at severities 1–5 ({sh.get('images_per_condition')} images per corruption and severity; 0 = the same "
            f"images clean). T fitted on {sh.get('select')} validation.\n\n| severity | accuracy | NLL | ECE | ECE after T "
            f"| diversity D |\n|---|---|---|---|---|---|\n{rows}\n")


def model_card(man: dict[str, Any]) -> str:
    """README.md of a bundle from its manifest (a text template; the tables are built above)."""
    ds, ens = man["dataset"], man.get("ensemble", {})
    inp, pre = ds["input"], ds["preprocess"]
    met = ens.get("metrics", {})
    rows, onnx_line = _member_rows(man), _onnx_line(man)
    tta = "; each member averages the image and its horizontal mirror" if pre.get("tta_flip") else ""
    classes = ", ".join(ds["class_names"])
    src = man.get("source", {})
    return f"""# Ensemble model card: {man.get('title', 'NES ensemble')}

Exported by NES Explorer {man['library']['nes']} on {man['created']} from run `{src.get('run', '?')}`.
{len(man['members'])} members, each a DARTS-style cell network retrained from scratch; the ensemble
averages their softmax outputs.

## Intended use
Image classification of **{ds['name']}**-like inputs: {inp['channels']}×{inp['height']}×{inp['width']}
images (uint8 0–255, or float scaled to 0–1), one of {ds['num_classes']} classes ({classes}).
For teaching, research and comparing ensembles built with differentiable neural ensemble search.
Not for decisions about people, and not for images unlike the training data.

## How to use
```python
import nes
model = nes.load_ensemble("{man.get('bundle_name', 'BUNDLE')}")     # checks hashes and shapes
probs = model.predict(images)                # [N, {ds['num_classes']}] mean softmax of the members
```
or `python -m nes predict BUNDLE images.npz --json` (an `.npz` with an `images` array, or a folder
of PNG/JPEG files). Preprocessing inside the model: zero pad {pre['pad']}, center crop {pre['image_size']},
normalize with mean {pre['mean']} and std {pre['std']}{tta}.
{onnx_line}
## Data
Trained on {_training_data(ds)}, with the run's member settings; the
metrics below are on {ens.get('test_images', '?')} held-out test images ({ens.get('split', 'test')} split).

## Metrics
| member | λ (regularizer) | seed | genotype | test accuracy | test NLL | parameters |
|---|---|---|---|---|---|---|
{rows}

Ensemble: accuracy **{pct(met.get('accuracy'))}**, NLL {num(met.get('nll'))}, ECE {num(met.get('ece'))},
Brier {num(met.get('brier'))}, mean member accuracy {pct(met.get('member_accuracy'))},
disagreement {num(met.get('disagreement'))}, predictive JS {num(met.get('predictive_js'))}.
{_gain_line(ens)}{_calibration_line(ens)}{_shift_lines(ens)}
`manifest.json` also holds the pairwise architecture-JS and predictive-JS matrices.

## Limitations
- Members are small networks trained briefly (see `training` per member in the manifest); the
  accuracy is far from the state of the art and was measured on one test subset only.
- The architectures were searched and the members selected on this dataset's validation split;
  they do not transfer to other data without retraining.
- Probabilities are calibrated only as well as the ECE above says, and only on in-distribution
  images; out-of-distribution inputs still get confident-looking outputs.
"""
