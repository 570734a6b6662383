"""From jsonb feature objects to a scikit-learn preprocessing pipeline.

Upstream features are messy: a column may mix numbers and strings, be all
null, or bring categories never seen in training. The first pipeline step
(``FeatureFrame``) learns each column's kind from the training rows and
coerces any later frame to it, so the fitted pipeline - champion included -
accepts raw feature dicts of any shape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC = "numeric"
#: Numbers are clipped to +-HUGE before scaling (their squares stay finite),
#: and to +-SCALED_BOUND standard deviations after (random forests cast to
#: float32; nothing is learned from a value a million deviations out).
HUGE = 1e100
SCALED_BOUND = 1e6
CATEGORICAL = "categorical"


class NoUsableFeatures(ValueError):
    """Every feature column was empty."""


def frame_from_features(rows: list[dict]) -> pd.DataFrame:
    """A DataFrame with one column per feature name (missing keys are NaN),
    one row per feature object (from_records alone makes rows of only empty
    objects a frame of no rows)."""
    frame = pd.DataFrame.from_records(list(rows)) if len(rows) else pd.DataFrame()
    if len(frame) != len(rows):
        frame = pd.DataFrame(index=pd.RangeIndex(len(rows)))
    return frame


class JsonRows(Sequence):
    """Feature objects kept as JSON text and parsed (json.loads, exactly as
    psycopg's jsonb loader) only when asked for: the drift baseline reads
    the rows of a window, training reads a frame built without them.

    ``texts``: one JSON text per row, a list of str or bytes or a pyarrow
    string array; ``copy_escaped``: as COPY text prints them (backslashes
    doubled)."""

    def __init__(self, texts, copy_escaped: bool = False):
        self._texts = texts
        self._escaped = copy_escaped

    def __len__(self) -> int:
        return len(self._texts)

    def _list(self) -> list:
        if hasattr(self._texts, "to_pylist"):
            self._texts = self._texts.to_pylist()
        return self._texts

    def __getitem__(self, index):
        texts = self._list()[index]
        if not isinstance(index, slice):
            texts = [texts]
        if not texts:
            return []
        joined = (b"," if isinstance(texts[0], bytes) else ",").join(texts)
        if isinstance(joined, bytes):
            joined = joined.decode()
        if self._escaped:
            joined = joined.replace("\\\\", "\\")
        parsed = json.loads("[" + joined + "]")
        return parsed if isinstance(index, slice) else parsed[0]


#: json.loads keeps an integer literal beyond 64 bits as a Python int (and
#: from_records makes its column object); pyarrow makes it a double. jsonb
#: prints any number without an exponent (1.5e30 as 15 and 29 zeros), so
#: every double this large came from such a literal, or may have.
_BEYOND_INT64 = 2.0 ** 63


def frame_from_arrow(table) -> pd.DataFrame | None:
    """The frame ``frame_from_features`` builds from the same JSON objects,
    from a pyarrow Table of them (pyarrow.json's inference), or None
    when this fast path cannot promise that: a type other than booleans,
    64-bit integers, doubles, strings and nulls (pyarrow reads strings that
    look like timestamps as timestamps), or a number of 2**63 or more.
    Numbers, strings and booleans come out with the same dtypes and values
    (tests/unit/test_loading.py); a missing value in an object column may
    be None where from_records puts NaN or the other way round (it puts None
    for a JSON null and NaN for an absent key): both are missing to every
    reader (infer_kinds, coerce, FeatureFrame, the drift baseline). A column
    that is null throughout is float64 NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names, arrays = [], []
    for i, field in enumerate(table.schema):
        t = field.type
        if not (pa.types.is_boolean(t) or t == pa.int64() or t == pa.float64()
                or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            return None
        child = table.column(i).combine_chunks()
        if pa.types.is_null(t):
            child = pa.nulls(len(child), pa.float64())
        elif t == pa.float64():
            largest = pc.max(pc.abs(child)).as_py()
            if largest is not None and not largest < _BEYOND_INT64:
                return None
        names.append(field.name)
        arrays.append(child)
    if not names:
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    return pa.Table.from_arrays(arrays, names=names).to_pandas()


def infer_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """Each usable column's kind. A column is numeric when most of its
    non-null values are numbers (booleans excluded); otherwise categorical.
    Columns without any non-null value are left out."""
    kinds = {}
    for column in frame.columns:
        values = frame[column].dropna()
        if values.empty:
            continue
        if values.dtype.kind in "iuf":
            kinds[column] = NUMERIC          # all numbers: no call per value
        elif values.dtype.kind == "b" or isinstance(values.dtype, pd.StringDtype):
            kinds[column] = CATEGORICAL      # no numbers at all
        else:
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
            if values.dtype.kind in "iuf":
                # Already numbers (no booleans, no objects): the same result
                # as the value-by-value path, without a Python call per value.
                numbers = values.astype(float)
            else:
                numbers = pd.to_numeric(values.map(_number), errors="coerce").astype(float)
            # Infinite values (JSON numbers beyond double precision) are
            # treated as missing: estimators and scalers refuse them. Finite
            # ones near the limit (1e300) are clipped: StandardScaler's
            # variance of such values overflows.
            out[column] = numbers.replace([np.inf, -np.inf], np.nan).clip(-HUGE, HUGE)
        elif _only_text(values):
            out[column] = values.astype(object).where(values.notna(), np.nan)
        else:
            out[column] = values.map(_category).astype(object)
    return pd.DataFrame(out, index=frame.index)


def _only_text(values: pd.Series) -> bool:
    """Every non-missing value is a str (as a coerced or a string column)."""
    if isinstance(values.dtype, pd.StringDtype):
        return True
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in (
        "string", "empty")


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


class Clip(BaseEstimator, TransformerMixin):
    """Values limited to [-bound, bound]."""

    def __init__(self, bound: float = SCALED_BOUND):
        self.bound = bound

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X):
        return np.clip(X, -self.bound, self.bound)


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
                ("bound", Clip(SCALED_BOUND)),
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
