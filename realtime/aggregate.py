"""Window scores -> one stream-level spoof probability (every stream's summary, files included).

Methods (``values`` are probabilities unless ``logits=True``):

* ``mean_logit`` (default): mean of the per-window logits, then sigmoid. Equivalent to
  the geometric mean of the odds: one confident window does not outvote many, and
  agreeing windows reinforce each other more than a plain mean of probabilities would.
* ``mean_prob``: arithmetic mean of the probabilities.
* ``max``: the most spoof-like window (sensitive: flags a splice of fake speech in a real
  recording, at the price of more false alarms on long files).
* ``median``: robust to a few outlier windows.

Probabilities are clipped to ``[EPS, 1 - EPS]`` before the logit so a window at exactly
0 or 1 stays finite (logit range about +-16.1).

:class:`RunningAggregate` computes the same in constant memory for every stream (all methods
but ``median``); a session feeds it the engine's logits, so no clipping is involved there.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["aggregate", "RunningAggregate", "METHODS", "EPS", "logit", "sigmoid"]

Method = Literal["mean_logit", "mean_prob", "max", "median"]
METHODS: tuple[str, ...] = ("mean_logit", "mean_prob", "max", "median")
EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: float) -> float:
    # Split on the sign so exp never overflows.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"aggregation method {method!r} not accepted; accepted: {', '.join(METHODS)}")


def aggregate(values: ArrayLike, method: Method = "mean_logit", *, logits: bool = False) -> float:
    """File-level spoof probability from per-window scores.

    Args:
        values: 1-D window scores, probabilities in [0, 1] (or logits with ``logits=True``).
        method: one of :data:`METHODS` (see module doc).
        logits: the values are logits (pre-sigmoid), not probabilities.

    Raises:
        ValueError: unknown method, no values, non-finite values, probabilities outside [0, 1].
    """
    _check_method(method)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"aggregate() needs a non-empty 1-D array of window scores, got shape {v.shape}")
    if not np.isfinite(v).all():
        i = int(np.flatnonzero(~np.isfinite(v))[0])
        raise ValueError(f"aggregate(): window score {i} is {v[i]}; scores must be finite")
    if not logits and (v.min() < 0.0 or v.max() > 1.0):
        raise ValueError(f"aggregate(): probabilities must be in [0, 1], got range "
                         f"{v.min():g}..{v.max():g} (pass logits=True for logits)")
    if method == "mean_logit":
        return sigmoid(float(np.mean(v if logits else logit(v))))
    p = np.array([sigmoid(float(x)) for x in v]) if logits else v
    if method == "mean_prob":
        return float(np.mean(p))
    if method == "max":
        return float(np.max(p))
    return float(np.median(p))


class RunningAggregate:
    """Constant-memory aggregate of a live stream's window scores.

    ``add(p)`` per window (probability, or logit with ``logits=True`` at construction);
    ``value`` is the aggregate so far (None before the first window). Matches
    :func:`aggregate` for ``mean_logit``, ``mean_prob`` and ``max``; ``median`` needs
    every score and is offline only.
    """

    __slots__ = ("method", "logits", "count", "_sum", "_max")

    def __init__(self, method: Method = "mean_logit", *, logits: bool = False) -> None:
        _check_method(method)
        if method == "median":
            raise ValueError("median needs all window scores; use aggregate() offline, or "
                             "one of mean_logit, mean_prob, max for a running aggregate")
        self.method = method
        self.logits = logits
        self.count = 0
        self._sum = 0.0
        self._max = -math.inf

    def add(self, value: float) -> None:
        x = float(value)
        if not math.isfinite(x) or (not self.logits and not 0.0 <= x <= 1.0):
            raise ValueError(f"window score {value!r} not accepted; expected "
                             + ("a finite logit" if self.logits else "a probability in [0, 1]"))
        if self.method == "mean_logit":
            self._sum += x if self.logits else float(logit(x))
        elif self.method == "mean_prob":
            self._sum += sigmoid(x) if self.logits else x
        else:
            self._max = max(self._max, x)
        self.count += 1

    @property
    def value(self) -> float | None:
        if self.count == 0:
            return None
        if self.method == "mean_logit":
            return sigmoid(self._sum / self.count)
        if self.method == "mean_prob":
            return self._sum / self.count
        return sigmoid(self._max) if self.logits else self._max
