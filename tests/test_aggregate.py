"""aggregate(): documented methods, logits or probabilities, running version agrees."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.aggregate import METHODS, RunningAggregate, aggregate, logit, sigmoid

probs = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50)


def test_known_values():
    p = [0.9, 0.9, 0.1]
    z = math.log(9)  # logit(0.9)
    assert aggregate(p) == pytest.approx(sigmoid(z / 3))  # mean of logits (z, z, -z) -> z/3
    assert aggregate(p, "mean_prob") == pytest.approx(19 / 30)
    assert aggregate(p, "max") == 0.9
    assert aggregate(p, "median") == 0.9
    assert aggregate([0.2]) == pytest.approx(0.2)


def test_mean_logit_is_not_dominated_by_one_confident_window():
    p = [0.1] * 9 + [1.0]
    assert aggregate(p) < 0.5 < aggregate(p, "max")


@settings(deadline=None)
@given(probs, st.sampled_from(METHODS))
def test_logit_input_matches_probability_input(p, method):
    p = np.clip(np.array(p), 1e-6, 1 - 1e-6)
    assert aggregate(logit(p), method, logits=True) == pytest.approx(aggregate(p, method), abs=1e-9)


@settings(deadline=None)
@given(probs, st.sampled_from(METHODS))
def test_result_is_a_probability_within_the_window_range(p, method):
    r = aggregate(p, method)
    assert 0.0 <= r <= 1.0
    assert min(p) - 1e-6 <= r <= max(p) + 1e-6


@settings(deadline=None)
@given(probs, st.sampled_from(["mean_logit", "mean_prob", "max"]), st.booleans())
def test_running_aggregate_agrees(p, method, as_logits):
    values = logit(np.array(p)) if as_logits else np.array(p)
    run = RunningAggregate(method, logits=as_logits)
    assert run.value is None
    for v in values:
        run.add(float(v))
    assert run.count == len(p)
    assert run.value == pytest.approx(aggregate(values, method, logits=as_logits), rel=1e-9, abs=1e-12)


def test_float32_engine_output_accepted():
    assert aggregate(np.array([0.25, 0.75], dtype=np.float32), "mean_prob") == 0.5


@pytest.mark.parametrize(
    "args, kw, msg",
    [
        (([0.5], "mean"), {}, "method 'mean' not accepted; accepted: mean_logit, mean_prob, max, median"),
        (([],), {}, r"non-empty 1-D array of window scores, got shape \(0,\)"),
        (([[0.5]],), {}, r"got shape \(1, 1\)"),
        (([0.5, float("nan")],), {}, "window score 1 is nan"),
        (([0.5, 1.5],), {}, r"probabilities must be in \[0, 1\], got range 0.5..1.5 \(pass logits=True"),
    ],
)
def test_errors(args, kw, msg):
    with pytest.raises(ValueError, match=msg):
        aggregate(*args, **kw)


def test_running_rejects_median_and_bad_values():
    with pytest.raises(ValueError, match="median needs all window scores"):
        RunningAggregate("median")
    with pytest.raises(ValueError, match="expected a probability in"):
        RunningAggregate().add(1.5)
    with pytest.raises(ValueError, match="finite logit"):
        RunningAggregate(logits=True).add(float("inf"))


def test_sigmoid_extremes_do_not_overflow():
    assert sigmoid(1000.0) == 1.0 and sigmoid(-1000.0) == 0.0
