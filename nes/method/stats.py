"""Paired bootstrap intervals for a difference between two predictors scored on the same images.

Every difference the product reports (ensemble vs its best member, method vs method, the export
manifest) is a `Difference`: the value on the whole test split and a percentile bootstrap interval
that resamples the *test images* (the same indices for both predictors, so the interval reflects
the noise of the test set, not of training). On 2000 images one accuracy has a standard error of
≈ 0.8 points, so a gain of a few tenths is usually `within_noise`. Accuracy differences are in
points (percent), NLL differences in nats; A − B throughout (for NLL, a negative value means A is
better).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

RESAMPLES = 2000
LEVEL = 0.95
_CHUNK = 250  # resamples drawn at once: bounds memory at _CHUNK × N indices


@dataclass(frozen=True)
class Difference:
    """A − B of one metric, with its paired bootstrap interval [lo, hi] at `level`."""

    metric: str  # "accuracy" (points), "nll" (nats), or a ledger term (`ledger.TERMS`)
    value: float
    lo: float
    hi: float
    n: int  # test images
    level: float = LEVEL
    resamples: int = RESAMPLES

    @property
    def within_noise(self) -> bool:
        """The interval contains 0: the data do not tell which of A and B is better."""
        return self.lo <= 0.0 <= self.hi

    def text(self) -> str:
        """E.g. "+0.42 pts (95% CI −0.31 to +1.10, within noise)"."""
        fmt, unit = ("{:+.2f}", " pts") if self.metric.endswith("accuracy") else ("{:+.4f}", "")
        tail = "within noise" if self.within_noise else "beyond noise"
        return (f"{fmt.format(self.value)}{unit} ({100 * self.level:.0f}% CI {fmt.format(self.lo)} to "
                f"{fmt.format(self.hi)}, {tail})")

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n,
                "level": self.level, "resamples": self.resamples, "within_noise": self.within_noise}

    @classmethod
    def from_dict(cls, d: dict) -> "Difference":
        return cls(str(d["metric"]), float(d["value"]), float(d["lo"]), float(d["hi"]), int(d["n"]),
                   float(d.get("level", LEVEL)), int(d.get("resamples", RESAMPLES)))


def per_image(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """Per test image, float64 [N]: correctness in points (0 or 100) and −log p_y."""
    p = probs.detach().to(torch.float64)
    y = torch.as_tensor(labels).to(device=p.device, dtype=torch.int64)
    if p.dim() != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"probs must be [N, K] and labels [N], got {tuple(p.shape)} and {tuple(y.shape)}")
    return {"accuracy": 100.0 * (p.argmax(1) == y).to(torch.float64),
            "nll": -p.gather(1, y[:, None]).squeeze(1).clamp_min(eps).log()}


def bootstrap_mean(d: torch.Tensor, resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = 0, groups: int = 1) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of the per-image values d [N] and the percentile interval of its
    bootstrap distribution (images drawn with replacement; a fixed seed makes reports repeatable).

    groups > 1: the N images are `groups` corrupted copies of the same N / groups source images,
    laid out copy by copy ([g · N/groups + i], as `shift.pooled` builds them). Source images are
    drawn, each with all its copies: the copies of one image are not independent draws, and
    resampling them one by one would narrow the interval. The mean is the same either way."""
    if d.dim() != 1 or d.shape[0] < 1:
        raise ValueError(f"need a non-empty 1-D tensor of per-image values, got {tuple(d.shape)}")
    if not 0.0 < level < 1.0 or resamples < 10:
        raise ValueError(f"level must lie in (0, 1) and resamples be >= 10, got {level}, {resamples}")
    if groups < 1 or d.shape[0] % groups:
        raise ValueError(f"{d.shape[0]} images do not split into {groups} equal groups of copies")
    d = d.to(torch.float64).reshape(groups, -1).mean(0)
    n = d.shape[0]
    g = torch.Generator(device="cpu").manual_seed(seed)
    means = []
    for start in range(0, resamples, _CHUNK):
        idx = torch.randint(0, n, (min(_CHUNK, resamples - start), n), generator=g)
        means.append(d.cpu()[idx].mean(1))
    q = torch.quantile(torch.cat(means), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(d.mean()), float(q[0]), float(q[1])


def paired_difference(probs_a: torch.Tensor, probs_b: torch.Tensor, labels: torch.Tensor,
                      resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0,
                      groups: int = 1) -> dict[str, Difference]:
    """{"accuracy", "nll"}: A − B on the same images, each with its paired bootstrap interval
    (`groups`: corrupted copies of the same images, drawn together; see `bootstrap_mean`)."""
    a, b = per_image(probs_a, labels), per_image(probs_b, labels)
    out = {}
    for metric in ("accuracy", "nll"):
        value, lo, hi = bootstrap_mean(a[metric] - b[metric], resamples, level, seed, groups)
        out[metric] = Difference(metric, value, lo, hi, int(a[metric].shape[0]), level, resamples)
    return out


def best_member_index(val_member_probs: torch.Tensor, val_labels: torch.Tensor) -> int:
    """The member with the lowest validation NLL: the "best member" an ensemble is compared with,
    chosen without looking at the test split (picking it by test accuracy would favour it)."""
    y = torch.as_tensor(val_labels).to(torch.int64)
    nll = [float(per_image(p, y)["nll"].mean()) for p in val_member_probs]
    return min(range(len(nll)), key=nll.__getitem__)
