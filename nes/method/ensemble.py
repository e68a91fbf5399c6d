"""Ensemble metrics and NES forward (greedy) ensemble selection.

Shapes: M members, N samples, K classes. `member_probs` is [M, N, K] (softmax outputs of each
member), `probs` is [N, K], `labels` is int64 [N]. Inputs may be float16/32/64; every metric is
computed in float64 and returned as a Python float. All functions are pure (inputs untouched).
"""
from __future__ import annotations

import math

import torch

_METRICS = ("nll", "accuracy")


# ----------------------------------------------------------------------------- validation
def _as_float64(t: torch.Tensor, name: str, dims: str) -> torch.Tensor:
    """Validate a probability tensor of shape `dims` (e.g. "M, N, K") with every size >= 1 and
    return it as float64 (ValueError naming the argument and the expected shape)."""
    ndim = len(dims.split(","))
    if not isinstance(t, torch.Tensor) or t.dim() != ndim:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t)
        raise ValueError(f"{name} must be a {ndim}-D tensor [{dims}], got {shape}")
    if min(t.shape) < 1:
        raise ValueError(f"{name} must have {dims} >= 1, got {tuple(t.shape)}")
    return t.detach().to(torch.float64)


def _members(member_probs: torch.Tensor) -> torch.Tensor:
    return _as_float64(member_probs, "member_probs", "M, N, K")


def _probs(probs: torch.Tensor) -> torch.Tensor:
    return _as_float64(probs, "probs", "N, K")


def _labels(labels: torch.Tensor, n: int, k: int, device: torch.device) -> torch.Tensor:
    """Validate labels against N samples / K classes; return int64 [N] on `device`."""
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape [N]=[{n}], got {tuple(labels.shape)}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{int(labels.min())}, {int(labels.max())}]")
    return labels.to(device=device, dtype=torch.int64)


def _pl(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = _probs(probs)  # [N, K]
    return p, _labels(labels, p.shape[0], p.shape[1], p.device)


# ----------------------------------------------------------------------------- single-prediction metrics
def ensemble_probs(member_probs: torch.Tensor) -> torch.Tensor:
    """[M, N, K] -> [N, K]: mean of the members' softmax outputs (float32, or float64 for float64 input)."""
    mp = _members(member_probs)  # validates first; float64 [M, N, K]
    return mp.mean(0).to(torch.promote_types(member_probs.dtype, torch.float32))


def _accuracy(p: torch.Tensor, y: torch.Tensor) -> float:
    return (p.argmax(1) == y).to(torch.float64).mean().item()


def _nll(p: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> float:
    return (-p.gather(1, y[:, None]).squeeze(1).clamp_min(eps).log()).mean().item()


def _ece(p: torch.Tensor, y: torch.Tensor, bins: int = 10) -> float:
    conf, pred = p.max(1)  # [N], [N]
    correct = (pred == y).to(torch.float64)  # [N]
    # bin b covers (b/bins, (b+1)/bins]; conf == 0 falls into bin 0
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64, device=p.device)[1:-1]  # [bins-1]
    idx = torch.bucketize(conf.clamp(0.0, 1.0), edges)  # [N] in [0, bins)
    count = torch.zeros(bins, dtype=torch.float64, device=p.device).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros_like(count).index_add_(0, idx, conf)  # [bins]
    acc_sum = torch.zeros_like(count).index_add_(0, idx, correct)  # [bins]
    # sum_b |B_b|/N * |acc_b - conf_b| = sum_b |acc_sum_b - conf_sum_b| / N
    return ((acc_sum - conf_sum).abs().sum() / p.shape[0]).item()


def _brier(p: torch.Tensor, y: torch.Tensor) -> float:
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(torch.float64)  # [N, K]
    return ((p - onehot) ** 2).sum(1).mean().item()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of probs [N, K] against labels [N]."""
    return _accuracy(*_pl(probs, labels))


def nll(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood −log p_y, with p_y clamped at `eps`."""
    return _nll(*_pl(probs, labels), eps=eps)


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> float:
    """Expected calibration error of top-1 confidence, `bins` equal-width bins on [0, 1], size-weighted."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return _ece(*_pl(probs, labels), bins=bins)


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over samples of Σ_k (p_k − onehot_k)²; in [0, 2]."""
    return _brier(*_pl(probs, labels))


def member_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Metrics of a single member: accuracy, nll, ece, brier."""
    p, y = _pl(probs, labels)
    return {"accuracy": _accuracy(p, y), "nll": _nll(p, y), "ece": _ece(p, y), "brier": _brier(p, y)}


# ----------------------------------------------------------------------------- ensemble / diversity metrics
def _mpl(member_probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mp = _members(member_probs)  # [M, N, K]
    return mp, _labels(labels, mp.shape[1], mp.shape[2], mp.device)


def _oracle_nll(mp: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> float:
    py = mp.gather(2, y.expand(mp.shape[0], -1)[..., None]).squeeze(2)  # [M, N]
    return (-py.clamp_min(eps).log()).min(0).values.mean().item()


def oracle_nll(member_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over samples of min over members of −log p_m,y (NLL of a per-sample oracle selector)."""
    return _oracle_nll(*_mpl(member_probs, labels))


def _pair_mean(mat: torch.Tensor) -> float:
    """Mean of the off-diagonal entries of an [M, M] matrix; 0.0 if M < 2."""
    m = mat.shape[0]
    return 0.0 if m < 2 else ((mat.sum() - mat.diagonal().sum()) / (m * (m - 1))).item()


def pairwise_disagreement(member_probs: torch.Tensor) -> torch.Tensor:
    """[M, N, K] -> [M, M] float64: per member pair, the fraction of samples whose argmax differs.

    Counted through one-hot predictions [M, N, K] (agreements = onehot·onehotᵀ over N and K), so
    memory grows as M·N·K, not as the M·M·N of comparing every pair on every sample."""
    mp = _members(member_probs)
    onehot = torch.nn.functional.one_hot(mp.argmax(2), mp.shape[2]).to(torch.float64)  # [M, N, K]
    agree = torch.einsum("ink,jnk->ij", onehot, onehot) / mp.shape[1]  # [M, M]
    return (1.0 - agree).clamp_min(0.0).fill_diagonal_(0.0)


def disagreement(member_probs: torch.Tensor, labels: torch.Tensor | None = None) -> float:
    """Mean over member pairs of the fraction of samples whose argmax differs; 0.0 if M < 2."""
    mp = _members(member_probs) if labels is None else _mpl(member_probs, labels)[0]
    return _pair_mean(pairwise_disagreement(mp))


def predictive_js(member_probs: torch.Tensor) -> torch.Tensor:
    """[M, N, K] -> [M, M] float64: mean over samples of the Jensen–Shannon divergence (nats).

    JS(p, q) = H((p+q)/2) − (H(p) + H(q))/2; symmetric, zero diagonal, clamped to [0, ln 2].
    """
    mp = _members(member_probs).clamp_min(0.0)  # [M, N, K]
    m = mp.shape[0]
    ent = -torch.xlogy(mp, mp).sum(2)  # [M, N]
    out = torch.zeros(m, m, dtype=torch.float64, device=mp.device)
    for i in range(m):  # loop over pairs: avoids an [M, M, N, K] intermediate
        for j in range(i + 1, m):
            mix = 0.5 * (mp[i] + mp[j])  # [N, K]
            js = -torch.xlogy(mix, mix).sum(1) - 0.5 * (ent[i] + ent[j])  # [N]
            out[i, j] = out[j, i] = js.clamp(0.0, math.log(2.0)).mean()
    return out


def ensemble_metrics(member_probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Metrics of the mean-probability ensemble plus oracle / diversity / member statistics."""
    mp, y = _mpl(member_probs, labels)
    p = mp.mean(0)  # [N, K]
    return {
        "accuracy": _accuracy(p, y),
        "nll": _nll(p, y),
        "ece": _ece(p, y),
        "brier": _brier(p, y),
        "oracle_nll": _oracle_nll(mp, y),
        "member_accuracy": sum(_accuracy(q, y) for q in mp) / mp.shape[0],
        "disagreement": disagreement(mp),
        "predictive_js": _pair_mean(predictive_js(mp)),
        "size": float(mp.shape[0]),
    }


# ----------------------------------------------------------------------------- temperature scaling
def temperature_scale(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log p / T) along the last dim: T > 1 softens, T < 1 sharpens; the argmax is kept."""
    return torch.softmax(torch.log(_probs(probs).clamp_min(1e-12)) / float(temperature), -1)


def fit_temperature(probs: torch.Tensor, labels: torch.Tensor, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T in [lo, hi] that minimizes the NLL of `temperature_scale(probs, T)` on (probs, labels):
    fit it on a validation split, never on the test set. Golden-section search over log T (the NLL
    of temperature-scaled log-probabilities is convex in 1/T, so it has one minimum)."""
    p, y = _pl(probs, labels)
    logp = torch.log(p.clamp_min(1e-12))
    rows = torch.arange(len(y), device=p.device)

    def loss(log_t: float) -> float:
        return float(-torch.log_softmax(logp / math.exp(log_t), -1)[rows, y].mean())

    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    return math.exp(0.5 * (a + b))


def calibrated_metrics(val_member_probs: torch.Tensor, val_labels: torch.Tensor,
                       test_member_probs: torch.Tensor, test_labels: torch.Tensor) -> dict[str, float]:
    """The mean-probability ensemble after temperature scaling: T fitted on the validation split,
    test accuracy (unchanged), NLL, ECE and Brier with T applied, and the ECE before it."""
    val, vy = _mpl(val_member_probs, val_labels)
    test, ty = _mpl(test_member_probs, test_labels)
    t = fit_temperature(val.mean(0), vy)
    p = temperature_scale(test.mean(0), t)
    return {"temperature": t, "accuracy": _accuracy(p, ty), "nll": _nll(p, ty), "ece": _ece(p, ty),
            "brier": _brier(p, ty), "ece_before": _ece(test.mean(0), ty)}


# ----------------------------------------------------------------------------- NES greedy selection
def greedy_selection(
    val_member_probs: torch.Tensor, val_labels: torch.Tensor, size: int, metric: str = "nll",
    start: tuple[int, ...] = (),
) -> list[int]:
    """NES forward selection without replacement (Zaidi et al. 2021, Algorithm "ForwardSelect").

    Starts from the members `start` (indices, kept in that order; none: the best single member by
    `metric`, "nll": lower is better, "accuracy": higher is better), then repeatedly adds the
    member whose inclusion makes the mean-probability ensemble best; ties go to the lower index.
    Stops at `size` members or when members run out.
    """
    if metric not in _METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {_METRICS}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    mp, y = _mpl(val_member_probs, val_labels)  # [M, N, K], [N]
    loss = _nll if metric == "nll" else (lambda p, t: -_accuracy(p, t))  # lower is better

    if any(not 0 <= i < mp.shape[0] for i in start) or len(set(start)) < len(start):
        raise ValueError(f"start {start!r} must be distinct indices of the {mp.shape[0]} members")
    chosen: list[int] = list(start)
    total = mp[chosen].sum(0) if chosen else torch.zeros_like(mp[0])  # [N, K] running sum of the chosen members' probs
    while len(chosen) < min(size, mp.shape[0]):
        best_i, best_loss = -1, math.inf
        for i in range(mp.shape[0]):  # increasing index + strict '<' => ties go to the lower index
            if i in chosen:
                continue
            cand = loss((total + mp[i]) / (len(chosen) + 1), y)
            if cand < best_loss:
                best_i, best_loss = i, cand
        if best_i < 0:  # only possible with NaN losses: fall back to the lowest unused index
            best_i = next(i for i in range(mp.shape[0]) if i not in chosen)
        chosen.append(best_i)
        total = total + mp[best_i]
    return chosen
