"""Tests for training.metrics: hand-worked examples, sklearn cross-checks, and properties."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import metrics as M

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the reference for cross-checks")

ROOT = Path(__file__).resolve().parents[1]


def sklearn_eer(bona: np.ndarray, spoof: np.ndarray) -> float:
    """EER at the crossing of FPR and FNR from sklearn's ROC (bona fide = positive, higher = bona fide)."""
    y = np.r_[np.ones(bona.size), np.zeros(spoof.size)]
    fpr, tpr, _ = sklearn_metrics.roc_curve(y, np.r_[bona, spoof], drop_intermediate=False)
    fnr = 1 - tpr
    i = np.argmin(np.abs(fnr - fpr))
    return float((fnr[i] + fpr[i]) / 2)


def brute_force_det(bona: np.ndarray, spoof: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct definition for tie-free scores: reject bona fide at score <= t, accept spoof at score > t."""
    thr = np.r_[min(bona.min(), spoof.min()) - 0.001, np.sort(np.r_[bona, spoof])]
    frr = np.array([np.mean(bona <= t) for t in thr])
    far = np.array([np.mean(spoof > t) for t in thr])
    return frr, far, thr


# ----------------------------------------------------------------------------- EER, hand-worked


def test_eer_separable_is_zero_and_threshold_between_classes() -> None:
    eer, thr = M.compute_eer([3.0, 4.0], [1.0, 2.0])
    assert eer == 0.0
    assert thr == 2.0  # bona fide accepted when score > 2


def test_eer_reversed_is_one() -> None:
    eer, _ = M.compute_eer([1.0, 2.0], [3.0, 4.0])
    assert eer == 1.0


def test_eer_interleaved_half() -> None:
    # sorted: 1b 2s 3b 4s -> FRR [0 .5 .5 1 1], FAR [1 1 .5 .5 0]; |diff| min at index 2
    eer, thr = M.compute_eer([1.0, 3.0], [2.0, 4.0])
    assert eer == 0.5
    assert thr == 2.0


def test_det_curve_values_by_hand() -> None:
    curve = M.det_curve([2.0, 3.0], [1.0, 2.5])
    np.testing.assert_allclose(curve.frr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.far, [1, 0.5, 0.5, 0, 0])
    np.testing.assert_allclose(curve.thresholds, [0.999, 1, 2, 2.5, 3])


def test_eer_ties_follow_asvspoof_stable_sort() -> None:
    # The reference scripts concatenate bona fide first and mergesort, so on a tie the bona fide
    # trial counts as rejected before the spoof counts as rejected: identical scores give EER 1.
    eer, thr = M.compute_eer([1.0], [1.0])
    assert eer == 1.0
    assert thr == 1.0


def test_eer_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError, match="bonafide_scores is empty"):
        M.compute_eer([], [1.0])
    with pytest.raises(ValueError, match="spoof_scores has 1 non-finite"):
        M.compute_eer([1.0], [0.0, np.nan])


# ----------------------------------------------------------------------------- EER vs sklearn


@pytest.mark.parametrize(
    ("n_bona", "n_spoof", "shift", "seed"),
    [(200, 300, 0.0, 0), (500, 120, 1.0, 1), (50, 800, 3.0, 2), (1000, 1000, 0.3, 3), (37, 41, 8.0, 4)],
)
def test_eer_matches_sklearn_roc_crossing(n_bona: int, n_spoof: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bona = rng.normal(shift, 1.0, n_bona)
    spoof = rng.normal(0.0, 1.0, n_spoof)
    eer, _ = M.compute_eer(bona, spoof)
    tol = 1.0 / min(n_bona, n_spoof)
    assert abs(eer - sklearn_eer(bona, spoof)) <= tol
    if shift == 8.0:
        assert eer == 0.0


@settings(max_examples=60, deadline=None)
@given(
    bona=st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=40, unique=True),
    spoof=st.lists(st.integers(-10_000, 10_000), min_size=1, max_size=40, unique=True),
)
def test_eer_equals_direct_definition_without_ties(bona: list[int], spoof: list[int]) -> None:
    b = np.array(bona, dtype=float)
    s = np.array(sorted(set(spoof) - set(bona)), dtype=float)
    if s.size == 0:
        return
    frr, far, thr = brute_force_det(b, s)
    curve = M.det_curve(b, s)
    np.testing.assert_allclose(curve.frr, frr)
    np.testing.assert_allclose(curve.far, far)
    np.testing.assert_allclose(curve.thresholds, thr)
    eer, t = M.compute_eer(b, s)
    i = int(np.argmin(np.abs(frr - far)))
    assert eer == pytest.approx((frr[i] + far[i]) / 2)
    assert t == thr[i]
    assert 0.0 <= eer <= 1.0


@settings(max_examples=40, deadline=None)
@given(
    bona=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30, unique=True),
    spoof=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30, unique=True),
)
def test_eer_from_spoof_scores_threshold_is_in_caller_units(bona: list[float], spoof: list[float]) -> None:
    b = np.array(bona)
    s = np.array(sorted(set(spoof) - set(bona)))
    if s.size == 0:
        return
    labels = np.r_[np.zeros(b.size, int), np.ones(s.size, int)]
    eer, thr = M.eer_from_spoof_scores(labels, np.r_[b, s])
    # Same EER as negating by hand...
    assert eer == M.compute_eer(-b, -s)[0]
    # ...and "spoof when score >= thr" reproduces the two error rates whose mean is the EER.
    frr = np.mean(b >= thr)
    far = np.mean(s < thr)
    assert eer == pytest.approx((frr + far) / 2)


def test_eer_from_spoof_scores_probability_and_logit_agree() -> None:
    rng = np.random.default_rng(5)
    labels = np.array(["bonafide"] * 300 + ["spoof"] * 200)
    logits = np.r_[rng.normal(-1, 1, 300), rng.normal(1, 1, 200)]
    p = 1 / (1 + np.exp(-logits))
    e_logit, t_logit = M.eer_from_spoof_scores(labels, logits)
    e_prob, t_prob = M.eer_from_spoof_scores(labels, p)
    assert e_logit == pytest.approx(e_prob)
    assert t_prob == pytest.approx(1 / (1 + np.exp(-t_logit)))
    assert 0.1 < e_logit < 0.4  # overlapping classes, d' = 2 -> EER near 16 %


def test_spoof_mask_rejects_unknown_labels() -> None:
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['bona-fide'\]; accepted: 'bonafide', 'spoof'"):
        M.spoof_mask(["bona-fide", "spoof"])
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \[2\]"):
        M.spoof_mask([0, 1, 2])
    with pytest.raises(ValueError, match="labels has 2 entries but scores has 3"):
        M.eer_from_spoof_scores([0, 1], [0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------- minDCF


def test_min_dcf_hand_example() -> None:
    # FRR [0 0 .5 .5 1], FAR [1 .5 .5 0 0]; DCF = (0.95 FRR + 0.5 FAR) / 0.5 -> [1 .5 1.45 .95 1.9]
    dcf, thr = M.compute_min_dcf([2.0, 3.0], [1.0, 2.5])
    assert dcf == pytest.approx(0.5)
    assert thr == 1.0


def test_min_dcf_bounds_and_extremes() -> None:
    rng = np.random.default_rng(7)
    for shift in (0.0, 0.5, 2.0):
        dcf, _ = M.compute_min_dcf(rng.normal(shift, 1, 400), rng.normal(0, 1, 400))
        assert 0.0 <= dcf <= 1.0
    assert M.compute_min_dcf([5.0, 6.0], [1.0, 2.0])[0] == 0.0
    assert M.compute_min_dcf([1.0, 2.0], [5.0, 6.0])[0] == pytest.approx(1.0)


def test_min_dcf_improves_with_separation() -> None:
    rng = np.random.default_rng(8)
    spoof = rng.normal(0, 1, 2000)
    values = [M.compute_min_dcf(rng.normal(d, 1, 2000), spoof)[0] for d in (0.5, 1.5, 3.0)]
    assert values[0] > values[1] > values[2]


def test_min_dcf_equal_costs_bounded_by_twice_eer() -> None:
    # With p=0.5 and unit costs the normalized DCF is FRR + FAR, which is 2*EER at the EER point.
    rng = np.random.default_rng(9)
    bona, spoof = rng.normal(1, 1, 300), rng.normal(0, 1, 300)
    dcf, _ = M.compute_min_dcf(bona, spoof, p_spoof=0.5, c_miss=1, c_fa=1)
    eer, _ = M.compute_eer(bona, spoof)
    assert dcf <= 2 * eer + 1e-12


def test_min_dcf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="p_spoof must be in"):
        M.compute_min_dcf([1.0], [0.0], p_spoof=1.0)
    with pytest.raises(ValueError, match="costs must be positive"):
        M.compute_min_dcf([1.0], [0.0], c_fa=0)


# ----------------------------------------------------------------------------- t-DCF


ASV_TAR = np.array([3.0, 4.0])
ASV_NON = np.array([1.0, 2.0])
ASV_SPOOF = np.array([1.5, 3.5])


def test_tdcf_hand_example() -> None:
    # ASV EER threshold 2.0: P_miss_asv 0, P_fa_asv 0.5 (non-target at 2.0 counts as accepted,
    # as in the reference scripts), P_miss_spoof_asv 0.5.
    # C1 = 0.9405 * 1 - 0.0095 * 10 * 0.5 = 0.893 ; C2 = 10 * 0.05 * 0.5 = 0.25
    # CM FRR [0 0 .5 .5 1], FAR [1 .5 .5 0 0] -> t-DCF / 0.25 = [1 .5 2.286 1.786 3.572]
    tdcf, thr = M.compute_tdcf_2019([2.0, 3.0], [1.0, 2.5], ASV_TAR, ASV_NON, ASV_SPOOF)
    assert tdcf == pytest.approx(0.5)
    assert thr == 1.0
    cost = M.ASVSPOOF2019_COST_MODEL
    assert cost.p_tar == pytest.approx(0.9405) and cost.p_non == pytest.approx(0.0095)


def test_tdcf_hand_example_where_c1_decides() -> None:
    # CM sorted 1b 2s 3b 4b 5b: FRR [0 .25 .25 .5 .75 1], FAR [1 1 0 0 0 0].
    # t-DCF/C2 = FRR * C1/C2 + FAR -> minimum at index 2: 0.25 * 0.893 / 0.25 = C1 = 0.893.
    tdcf, thr = M.compute_tdcf_2019([1.0, 3.0, 4.0, 5.0], [2.0], ASV_TAR, ASV_NON, ASV_SPOOF)
    assert tdcf == pytest.approx(0.9405 - 0.0095 * 10 * 0.5)
    assert thr == 2.0


def test_tdcf_perfect_cm_is_zero_and_useless_cm_is_one() -> None:
    rng = np.random.default_rng(11)
    tar, non, spf = rng.normal(3, 1, 500), rng.normal(0, 1, 500), rng.normal(2, 1, 500)
    assert M.compute_tdcf_2019([5.0, 6.0, 7.0], [0.0, 1.0], tar, non, spf)[0] == 0.0
    # A CM giving every trial the same score can only act as accept-all or reject-all.
    assert M.compute_tdcf_2019(np.zeros(10), np.zeros(10), tar, non, spf)[0] == pytest.approx(1.0)
    assert M.compute_tdcf_2019([0.0, 1.0], [5.0, 6.0], tar, non, spf)[0] == pytest.approx(1.0)


def test_tdcf_in_unit_interval_and_monotone_in_cm_quality() -> None:
    rng = np.random.default_rng(12)
    tar, non, spf = rng.normal(3, 1, 800), rng.normal(0, 1, 800), rng.normal(2.5, 1, 800)
    spoof_cm = rng.normal(0, 1, 1500)
    values = []
    for d in (0.3, 1.5, 4.0):
        v, _ = M.compute_tdcf_2019(rng.normal(d, 1, 1500), spoof_cm, tar, non, spf)
        assert 0.0 <= v <= 1.0
        values.append(v)
    assert values[0] > values[1] > values[2]


def test_tdcf_refuses_asv_that_rejects_every_spoof() -> None:
    # All spoofs below the ASV threshold -> C2 = 0 -> normalization undefined.
    with pytest.raises(ValueError, match=r"C2=0 must both be positive"):
        M.compute_tdcf_2019([2.0], [1.0], ASV_TAR, ASV_NON, [-5.0, -6.0])


# ----------------------------------------------------------------------------- AUC


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes many ties
    assert M.compute_auc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))


def test_auc_extremes_and_string_labels() -> None:
    labels = ["bonafide", "bonafide", "spoof", "spoof"]
    assert M.compute_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert M.compute_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert M.compute_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    # one tie across classes: pairs (s>b) = 3 of 4, tie counts half -> 3.5/4
    assert M.compute_auc(labels, [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="AUC needs both classes; got 0 bona fide and 2 spoof"):
        M.compute_auc(["spoof", "spoof"], [0.1, 0.2])


# ----------------------------------------------------------------------------- threshold metrics


def test_threshold_metrics_hand_example() -> None:
    labels = [0, 0, 0, 1, 1, 1, 1]
    prob = [0.1, 0.6, 0.4, 0.9, 0.5, 0.2, 0.7]
    m = M.threshold_metrics(labels, prob, 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 2, 1)
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.precision == pytest.approx(3 / 4)
    assert m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(3 / 4)
    assert m.as_dict()["tp"] == 3


def test_threshold_metrics_matches_sklearn() -> None:
    rng = np.random.default_rng(21)
    labels = rng.integers(0, 2, 500)
    prob = np.clip(rng.normal(0.3 + 0.4 * labels, 0.25), 0, 1)
    m = M.threshold_metrics(labels, prob, 0.55)
    pred = (prob >= 0.55).astype(int)
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(labels, pred).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    assert m.accuracy == pytest.approx(sklearn_metrics.accuracy_score(labels, pred))
    assert m.precision == pytest.approx(sklearn_metrics.precision_score(labels, pred))
    assert m.recall == pytest.approx(sklearn_metrics.recall_score(labels, pred))
    assert m.f1 == pytest.approx(sklearn_metrics.f1_score(labels, pred))


def test_threshold_metrics_no_positive_predictions_gives_zero_not_nan() -> None:
    m = M.threshold_metrics(["bonafide", "spoof"], [0.1, 0.2], threshold=0.9)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    assert m.accuracy == 0.5


# ----------------------------------------------------------------------------- per-group EER


def test_eer_by_group_uses_all_bonafide_per_attack() -> None:
    rng = np.random.default_rng(31)
    bona = rng.normal(0, 1, 200)
    easy = rng.normal(4, 1, 100)  # spoof scores far above bona fide
    hard = rng.normal(0.2, 1, 150)
    labels = ["bonafide"] * 200 + ["spoof"] * 250
    groups = ["-"] * 200 + ["A07"] * 100 + ["A17"] * 150
    res = M.eer_by_group(labels, np.r_[bona, easy, hard], groups)
    assert set(res) == {"A07", "A17"}  # bona fide's "-" is not a group
    assert res["A07"].eer == pytest.approx(M.compute_eer(-bona, -easy)[0])
    assert res["A17"].eer == pytest.approx(M.compute_eer(-bona, -hard)[0])
    assert res["A07"].eer < 0.05 < res["A17"].eer
    assert (res["A17"].n_bonafide, res["A17"].n_spoof) == (200, 150)


def test_eer_by_group_skips_groups_without_spoof_and_needs_bonafide() -> None:
    res = M.eer_by_group([0, 0, 1], [0.1, 0.2, 0.9], ["librispeech", "ljspeech", "tts"])
    assert list(res) == ["tts"] and res["tts"].eer == 0.0
    with pytest.raises(ValueError, match="no bona fide trial"):
        M.eer_by_group([1, 1], [0.1, 0.2], ["a", "b"])
    with pytest.raises(ValueError, match="differ in length: 3, 3, 2"):
        M.eer_by_group([0, 0, 1], [0.1, 0.2, 0.9], ["a", "b"])


# ----------------------------------------------------------------------------- dependencies


def test_metrics_imports_neither_torch_nor_sklearn() -> None:
    code = (
        "import sys, training.metrics; "
        "bad = [m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
