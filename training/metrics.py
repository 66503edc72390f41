"""Evaluation metrics for spoofing countermeasures (pure numpy).

Sign conventions -- read this before passing scores in:

* ``compute_eer``, ``compute_min_dcf`` and ``compute_tdcf_2019`` follow the ASVspoof
  scoring scripts: a HIGHER score means MORE BONA FIDE. A trial is accepted as bona fide
  when ``score > threshold`` and rejected (called spoof) when ``score <= threshold``.
* Our models output a spoof probability (higher = more spoof). Pass ``-logit`` or ``1 - p``
  to the functions above, or use ``eer_from_spoof_scores`` / ``eer_by_group``, which take
  spoof scores and flip the sign themselves.
* ``compute_auc`` and ``threshold_metrics`` treat spoof as the positive class and take
  spoof scores (higher = more spoof).

Labels given as arrays may be strings (``"bonafide"`` / ``"spoof"``), booleans or 0/1
integers where 1 / True means spoof.

No torch or sklearn here: evaluation must run wherever numpy does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DetCurve",
    "GroupEER",
    "ThresholdMetrics",
    "TDCFCostModel",
    "ASVSPOOF2019_COST_MODEL",
    "det_curve",
    "compute_eer",
    "eer_from_spoof_scores",
    "compute_min_dcf",
    "compute_tdcf_2019",
    "compute_auc",
    "threshold_metrics",
    "eer_by_group",
    "spoof_mask",
]

ArrayLike = npt.ArrayLike


# --------------------------------------------------------------------------- helpers


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    """1-D float64 copy of ``x``; refuses empty or non-finite input (a NaN would sort anywhere)."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty; at least one score is needed")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s), first {a[i]!r} at index {i}")
    return a


def spoof_mask(labels: ArrayLike) -> np.ndarray:
    """Boolean array, True where the label is spoof.

    Accepts ``"bonafide"``/``"spoof"`` strings, booleans, or integers 0 (bona fide) / 1 (spoof).
    """
    a = np.asarray(labels).reshape(-1)
    if a.dtype.kind in "US":
        values = set(np.unique(a).tolist())
        unknown = values - {"bonafide", "spoof"}
        if unknown:
            raise ValueError(f"unknown label(s) {sorted(unknown)!r}; accepted: 'bonafide', 'spoof'")
        return a == "spoof"
    if a.dtype.kind == "b":
        return a.copy()
    if a.dtype.kind in "iuf":
        unknown = set(np.unique(a).tolist()) - {0, 1}
        if unknown:
            raise ValueError(f"unknown label value(s) {sorted(unknown)!r}; accepted: 0 (bonafide), 1 (spoof)")
        return a == 1
    raise ValueError(
        f"labels of dtype {a.dtype} are not supported; use 'bonafide'/'spoof' strings, booleans or 0/1"
    )


def _split(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Split spoof scores by label into (bonafide_scores, spoof_scores)."""
    mask = spoof_mask(labels)
    s = _scores(scores, "scores")
    if mask.shape != s.shape:
        raise ValueError(f"labels has {mask.size} entries but scores has {s.size}")
    return s[~mask], s[mask]


# --------------------------------------------------------------------------- EER


@dataclass(frozen=True)
class DetCurve:
    """Miss / false-alarm rates at every candidate threshold (ASVspoof construction).

    ``frr[i]``: fraction of bona fide trials with score <= ``thresholds[i]`` (rejected).
    ``far[i]``: fraction of spoof trials with score > ``thresholds[i]`` (accepted).
    Index 0 is the extra point (FRR 0, FAR 1) at ``min(score) - 0.001``.
    """

    frr: np.ndarray
    far: np.ndarray
    thresholds: np.ndarray


def det_curve(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> DetCurve:
    """DET curve as the ASVspoof 2019/2021 scripts build it (higher score = more bona fide).

    Bona fide and spoof scores are concatenated in that order and sorted with a stable sort,
    so on tied scores bona fide trials come first; this detail changes the EER on ties and
    is kept on purpose so our numbers match the published ones.
    """
    bona = _scores(bonafide_scores, "bonafide_scores")
    spoof = _scores(spoof_scores, "spoof_scores")
    n_bona, n_spoof = bona.size, spoof.size
    scores = np.concatenate([bona, spoof])
    is_bona = np.concatenate([np.ones(n_bona), np.zeros(n_spoof)])
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    bona_below = np.cumsum(is_bona[order])  # bona fide trials at or below each sorted score
    seen = np.arange(1, scores.size + 1)
    spoof_above = n_spoof - (seen - bona_below)  # spoof trials strictly after this position
    frr = np.concatenate([[0.0], bona_below / n_bona])
    far = np.concatenate([[1.0], spoof_above / n_spoof])
    thresholds = np.concatenate([[sorted_scores[0] - 0.001], sorted_scores])
    return DetCurve(frr=frr, far=far, thresholds=thresholds)


def compute_eer(bonafide_scores: ArrayLike, spoof_scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate and its threshold, computed exactly as the ASVspoof scripts do.

    Sign: HIGHER score = MORE BONA FIDE. Spoof probabilities must be negated first
    (or use ``eer_from_spoof_scores``).

    The EER is taken at the DET point where |FRR - FAR| is smallest (first such point) and
    is the mean of FRR and FAR there; no interpolation, so it matches published numbers.
    Returns ``(eer, threshold)`` with eer in [0, 1]; bona fide is accepted when score > threshold.
    """
    curve = det_curve(bonafide_scores, spoof_scores)
    i = int(np.argmin(np.abs(curve.frr - curve.far)))
    eer = 0.5 * (curve.frr[i] + curve.far[i])
    return float(eer), float(curve.thresholds[i])


def eer_from_spoof_scores(labels: ArrayLike, spoof_scores: ArrayLike) -> tuple[float, float]:
    """EER from model outputs where HIGHER = MORE SPOOF (probability or logit).

    Negates the scores for ``compute_eer`` and converts the threshold back, so the returned
    threshold is in the caller's units: call a trial spoof when ``spoof_score >= threshold``.
    """
    bona, spoof = _split(labels, spoof_scores)
    eer, thr = compute_eer(-bona, -spoof)
    return eer, -thr


@dataclass(frozen=True)
class GroupEER:
    """EER of one attack / source group against all bona fide trials."""

    eer: float
    threshold: float  # in spoof-score units: spoof when score >= threshold
    n_bonafide: int
    n_spoof: int


def eer_by_group(labels: ArrayLike, spoof_scores: ArrayLike, groups: ArrayLike) -> dict[str, GroupEER]:
    """Per-group EER (e.g. per attack A07..A19): each group's spoofs against ALL bona fide.

    This is how ASVspoof reports per-attack EER: bona fide trials have no attack, so every
    attack is scored against the full bona fide set. The group value of bona fide rows is
    ignored. Groups with no spoof trial do not appear in the result. Scores: higher = more spoof.
    """
    mask = spoof_mask(labels)
    s = _scores(spoof_scores, "spoof_scores")
    g = np.asarray(groups, dtype=object).reshape(-1)
    if not (mask.size == s.size == g.size):
        raise ValueError(f"labels, spoof_scores and groups differ in length: {mask.size}, {s.size}, {g.size}")
    bona = s[~mask]
    if bona.size == 0:
        raise ValueError("no bona fide trial: per-group EER needs bona fide scores to compare against")
    out: dict[str, GroupEER] = {}
    spoof_groups = np.array([str(x) for x in g[mask]], dtype=str)
    spoof_scores_only = s[mask]
    for name in np.unique(spoof_groups).tolist():
        sel = spoof_groups == name
        eer, thr = compute_eer(-bona, -spoof_scores_only[sel])
        out[name] = GroupEER(eer=eer, threshold=-thr, n_bonafide=int(bona.size), n_spoof=int(sel.sum()))
    return out


# --------------------------------------------------------------------------- minDCF (ASVspoof 5)


def compute_min_dcf(
    bonafide_scores: ArrayLike,
    spoof_scores: ArrayLike,
    p_spoof: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> tuple[float, float]:
    """Minimum normalized detection cost of a stand-alone countermeasure (ASVspoof 5).

    Sign: HIGHER score = MORE BONA FIDE. A miss is a rejected bona fide trial, a false
    alarm an accepted spoof. Defaults are the ASVspoof 5 evaluation plan's CM costs
    (Wang et al., "ASVspoof 5 Evaluation Plan", 2024, sec. on the minDCF metric:
    C_miss = 1, C_fa = 10, pi_spoof = 0.05).

    DCF(t) = (c_miss (1 - p_spoof) P_miss(t) + c_fa p_spoof P_fa(t)) / min(c_miss (1 - p_spoof), c_fa p_spoof)

    The normalizer is the cost of the better of the two trivial systems (accept all /
    reject all), so 1.0 means "no better than a fixed decision" and minDCF <= 1 always.
    Returns ``(min_dcf, threshold)``.
    """
    if not 0.0 < p_spoof < 1.0:
        raise ValueError(f"p_spoof must be in (0, 1), got {p_spoof!r}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss!r}, c_fa={c_fa!r}")
    curve = det_curve(bonafide_scores, spoof_scores)
    w_miss = c_miss * (1.0 - p_spoof)
    w_fa = c_fa * p_spoof
    dcf = (w_miss * curve.frr + w_fa * curve.far) / min(w_miss, w_fa)
    i = int(np.argmin(dcf))
    return float(dcf[i]), float(curve.thresholds[i])


# --------------------------------------------------------------------------- t-DCF (ASVspoof 2019)


@dataclass(frozen=True)
class TDCFCostModel:
    """Priors and costs of the tandem (ASV + CM) detection cost function."""

    p_spoof: float
    p_tar: float
    p_non: float
    c_miss_asv: float
    c_fa_asv: float
    c_miss_cm: float
    c_fa_cm: float


# ASVspoof 2019 evaluation plan (Todisco et al., ASVspoof 2019 Evaluation Plan, t-DCF section;
# t-DCF defined in Kinnunen et al., "t-DCF: a Detection Cost Function for the Tandem Assessment
# of Spoofing Countermeasures and Automatic Speaker Verification", Odyssey 2018).
ASVSPOOF2019_COST_MODEL = TDCFCostModel(
    p_spoof=0.05,
    p_tar=(1 - 0.05) * 0.99,
    p_non=(1 - 0.05) * 0.01,
    c_miss_asv=1.0,
    c_fa_asv=10.0,
    c_miss_cm=1.0,
    c_fa_cm=10.0,
)


def compute_tdcf_2019(
    bonafide_cm: ArrayLike,
    spoof_cm: ArrayLike,
    asv_target: ArrayLike,
    asv_nontarget: ArrayLike,
    asv_spoof: ArrayLike,
    cost_model: TDCFCostModel = ASVSPOOF2019_COST_MODEL,
) -> tuple[float, float]:
    """Minimum normalized t-DCF, ASVspoof 2019 (legacy) formulation.

    Sign: HIGHER score = MORE BONA FIDE for the CM, HIGHER = MORE TARGET for the ASV.

    The ASV system is fixed at its own EER threshold t_asv (target vs non-target). With
    P_miss_asv = P(target < t_asv), P_fa_asv = P(nontarget >= t_asv) and
    P_miss_spoof_asv = P(spoof < t_asv), the plan defines

        C1 = p_tar (C_miss_cm - C_miss_asv P_miss_asv) - p_non C_fa_asv P_fa_asv
        C2 = C_fa_cm p_spoof (1 - P_miss_spoof_asv)
        t-DCF_norm(s) = (C1 P_miss_cm(s) + C2 P_fa_cm(s)) / min(C1, C2)

    and reports the minimum over CM thresholds s. The constant ASV-only cost is left out in
    this formulation, so a perfect CM scores 0 and a CM no better than a fixed decision
    scores 1 (the minimum is <= 1 because both trivial thresholds are on the curve).
    The 2021 revision, which keeps the ASV floor, is a different function.
    Returns ``(min_tdcf, cm_threshold)``.
    """
    tar = _scores(asv_target, "asv_target")
    non = _scores(asv_nontarget, "asv_nontarget")
    spf = _scores(asv_spoof, "asv_spoof")
    _, t_asv = compute_eer(tar, non)
    p_miss_asv = float(np.mean(tar < t_asv))
    p_fa_asv = float(np.mean(non >= t_asv))
    p_miss_spoof_asv = float(np.mean(spf < t_asv))

    cm = cost_model
    c1 = cm.p_tar * (cm.c_miss_cm - cm.c_miss_asv * p_miss_asv) - cm.p_non * cm.c_fa_asv * p_fa_asv
    c2 = cm.c_fa_cm * cm.p_spoof * (1.0 - p_miss_spoof_asv)
    if c1 <= 0 or c2 <= 0:
        raise ValueError(
            f"t-DCF undefined for this ASV system: C1={c1:.4g}, C2={c2:.4g} must both be positive "
            f"(ASV P_miss={p_miss_asv:.3f}, P_fa={p_fa_asv:.3f}, spoof P_miss={p_miss_spoof_asv:.3f}); "
            "check that ASV scores are oriented higher = more target"
        )
    curve = det_curve(bonafide_cm, spoof_cm)
    tdcf = (c1 * curve.frr + c2 * curve.far) / min(c1, c2)
    i = int(np.argmin(tdcf))
    return float(tdcf[i]), float(curve.thresholds[i])


# --------------------------------------------------------------------------- AUC and fixed-threshold metrics


def compute_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, spoof = positive class, HIGHER score = MORE SPOOF.

    Rank-based (Mann-Whitney U) with tied scores given their average rank, which equals the
    trapezoidal ROC area. 0.5 is chance; a bona-fide-oriented score gives 1 - AUC.
    """
    bona, spoof = _split(labels, scores)
    if bona.size == 0 or spoof.size == 0:
        raise ValueError(f"AUC needs both classes; got {bona.size} bona fide and {spoof.size} spoof")
    s = np.concatenate([spoof, bona])
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    avg_rank = ends - (counts - 1) / 2.0
    spoof_rank_sum = avg_rank[inverse[: spoof.size]].sum()
    u = spoof_rank_sum - spoof.size * (spoof.size + 1) / 2.0
    return float(u / (spoof.size * bona.size))


@dataclass(frozen=True)
class ThresholdMetrics:
    """Decision quality at one threshold; positive class = spoof.

    Ratios whose denominator is zero (e.g. precision with no spoof prediction) are 0.0.
    """

    threshold: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    tp: int  # spoof called spoof
    fp: int  # bona fide called spoof
    tn: int  # bona fide called bona fide
    fn: int  # spoof called bona fide

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def threshold_metrics(labels: ArrayLike, spoof_prob: ArrayLike, threshold: float = 0.5) -> ThresholdMetrics:
    """Accuracy / precision / recall / F1 and confusion counts when calling ``spoof_prob >= threshold`` spoof."""
    mask = spoof_mask(labels)
    p = _scores(spoof_prob, "spoof_prob")
    if mask.shape != p.shape:
        raise ValueError(f"labels has {mask.size} entries but spoof_prob has {p.size}")
    pred = p >= threshold
    tp = int(np.sum(pred & mask))
    fp = int(np.sum(pred & ~mask))
    tn = int(np.sum(~pred & ~mask))
    fn = int(np.sum(~pred & mask))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return ThresholdMetrics(
        threshold=float(threshold),
        accuracy=_ratio(tp + tn, mask.size),
        precision=precision,
        recall=recall,
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )
