"""The drift baseline: per feature, the bins of the training window and the
share of rows in each, in exactly the form the SQL refresh bins new rows.

Bin numbers (the SQL in sql/schema.sql, refresh_drift, uses the same):
- numeric feature: ``width_bucket(value, edges)``, i.e. the number of edges
  <= value, 0..len(edges); a value that is not a JSON number counts as
  missing;
- categorical feature (strings, booleans, anything else): 1-based position
  in ``categories`` (the frequent ones), 0 for any other value;
- -1: missing (key absent or JSON null).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .features import CATEGORICAL, NUMERIC, as_float, category_text, is_json_number

NUMERIC_BINS = 10
MAX_CATEGORIES = 10
MIN_CATEGORY_SHARE = 0.01
MISSING = -1
OTHER = 0


@dataclass
class FeatureBaseline:
    feature: str
    kind: str
    edges: list[float]
    categories: list[str]
    bins: list[dict]  # {"bin": int, "label": str, "share": float}


def numeric_baseline(feature: str, values: list) -> FeatureBaseline:
    numbers = np.array([as_float(v) for v in values if is_json_number(v)], dtype=float)
    numbers = numbers[np.isfinite(numbers)]
    edges: list[float] = []
    if numbers.size:
        quantiles = np.quantile(numbers, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
        edges = sorted(set(float(q) for q in quantiles))
    counts = Counter()
    for value in values:
        if is_json_number(value):
            counts[int(np.searchsorted(edges, as_float(value), side="right"))] += 1
        else:
            counts[MISSING] += 1
    total = len(values)
    bins = [_bin(MISSING, "missing", counts[MISSING] / total)]
    bounds = [-np.inf, *edges, np.inf]
    for i in range(len(edges) + 1):
        bins.append(_bin(i, f"[{_fmt(bounds[i])}, {_fmt(bounds[i + 1])})", counts[i] / total))
    return FeatureBaseline(feature, NUMERIC, edges, [], bins)


def categorical_baseline(feature: str, values: list) -> FeatureBaseline:
    texts = [None if v is None else category_text(v) for v in values]
    present = Counter(t for t in texts if t is not None)
    total = len(values)
    categories = [c for c, n in present.most_common(MAX_CATEGORIES)
                  if n / total >= MIN_CATEGORY_SHARE]
    position = {c: i + 1 for i, c in enumerate(categories)}
    counts = Counter(MISSING if t is None else position.get(t, OTHER) for t in texts)
    bins = [_bin(MISSING, "missing", counts[MISSING] / total),
            _bin(OTHER, "other", counts[OTHER] / total)]
    bins += [_bin(position[c], c, counts[position[c]] / total) for c in categories]
    return FeatureBaseline(feature, CATEGORICAL, [], categories, bins)


def _bin(number: int, label: str, share: float) -> dict:
    return {"bin": number, "label": label, "share": share}


def _fmt(x: float) -> str:
    return "-inf" if x == -np.inf else "inf" if x == np.inf else f"{x:.6g}"


def baseline(rows: list[dict], kinds: dict[str, str]) -> list[FeatureBaseline]:
    """Bins and shares of every feature the model was trained on."""
    if not rows:
        return []
    result = []
    for feature, kind in sorted(kinds.items()):
        values = [row.get(feature) for row in rows]
        if kind == NUMERIC:
            result.append(numeric_baseline(feature, values))
        else:
            result.append(categorical_baseline(feature, values))
    return result
