"""From jsonb feature objects to a scikit-learn preprocessing pipeline.

Upstream features are messy: a column may mix numbers and strings, be all
null, or bring categories never seen in training. The first pipeline step
(``FeatureFrame``) learns each column's kind from the training rows and
coerces any later frame to it, so the fitted pipeline - champion included -
accepts raw feature dicts of any shape.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC = "numeric"
CATEGORICAL = "categorical"


class NoUsableFeatures(ValueError):
    """Every feature column was empty."""


def frame_from_features(rows: list[dict]) -> pd.DataFrame:
    """A DataFrame with one column per feature name (missing keys are NaN)."""
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()


def infer_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """Each usable column's kind. A column is numeric when most of its
    non-null values are numbers (booleans excluded); otherwise categorical.
    Columns without any non-null value are left out."""
    kinds = {}
    for column in frame.columns:
        values = frame[column].dropna()
        if values.empty:
            continue
        is_number = values.map(is_json_number)
        kinds[column] = NUMERIC if is_number.mean() > 0.5 else CATEGORICAL
    return kinds


def coerce(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """``frame`` reduced to ``kinds``' columns, each coerced to its kind:
    numbers as float (anything unparsable becomes NaN), categories as str
    (booleans as "true"/"false"; null stays missing)."""
    out = {}
    for column, kind in kinds.items():
        values = frame[column] if column in frame.columns else pd.Series(np.nan, index=frame.index)
        if kind == NUMERIC:
            numbers = values.map(_number)
            # Infinite values (JSON numbers beyond double precision) are
            # treated as missing: estimators and scalers refuse them.
            out[column] = pd.to_numeric(numbers, errors="coerce").astype(float).replace(
                [np.inf, -np.inf], np.nan)
        else:
            out[column] = values.map(_category).astype(object)
    return pd.DataFrame(out, index=frame.index)


def is_json_number(value) -> bool:
    """A JSON number (booleans are not numbers)."""
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def as_float(value) -> float:
    """A JSON number as a float: 1e400 arrives as a huge int, beyond double
    precision, and becomes +-inf."""
    try:
        return float(value)
    except OverflowError:
        return np.inf if value > 0 else -np.inf


def category_text(value) -> str:
    """A non-null value as a category, as the SQL drift refresh sees it
    (``value #>> '{}'``): booleans as "true"/"false", the rest as text."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def _number(value):
    """A value for a numeric column: booleans are not numbers, and JSON
    numbers beyond double precision become infinite, then missing."""
    if isinstance(value, (bool, np.bool_)):
        return np.nan
    if isinstance(value, int):
        return as_float(value)
    return value


def _category(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    return category_text(value)


class FeatureFrame(BaseEstimator, TransformerMixin):
    """Coerces raw feature frames (or lists of dicts) to fixed column kinds.

    ``kinds=None`` learns them from the rows given to ``fit``.
    """

    def __init__(self, kinds: dict[str, str] | None = None):
        self.kinds = kinds

    def fit(self, X, y=None):
        frame = X if isinstance(X, pd.DataFrame) else frame_from_features(list(X))
        self.kinds_ = dict(self.kinds) if self.kinds is not None else infer_kinds(frame)
        if not self.kinds_:
            raise NoUsableFeatures("no usable feature: every feature is empty")
        return self

    def transform(self, X):
        frame = X if isinstance(X, pd.DataFrame) else frame_from_features(list(X))
        return coerce(frame, self.kinds_)


def preprocessor(kinds: dict[str, str]) -> ColumnTransformer:
    """Impute and scale numbers; impute and one-hot encode categories,
    tolerating categories unseen in training and grouping rare ones."""
    numeric = [c for c, k in kinds.items() if k == NUMERIC]
    categorical = [c for c, k in kinds.items() if k == CATEGORICAL]
    transformers = []
    if numeric:
        transformers.append((
            "numbers",
            Pipeline([
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
            ]),
            numeric,
        ))
    if categorical:
        transformers.append((
            "categories",
            Pipeline([
                ("impute", SimpleImputer(strategy="constant", fill_value="(missing)",
                                         keep_empty_features=True)),
                ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                         min_frequency=5, max_categories=30,
                                         sparse_output=False)),
            ]),
            categorical,
        ))
    return ColumnTransformer(transformers, remainder="drop")
