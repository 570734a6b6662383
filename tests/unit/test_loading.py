"""The fast loader (COPY text parsed by pyarrow) gives training what the
row-by-row loader gave it: the same frame as frame_from_features (values
and dtypes), the same ids, labels, predictions and feature objects.

No database: the lines are built here the way PostgreSQL prints them
(jsonb text: ", " and ": ", keys by length then bytes, non-ASCII as is;
COPY text: tab-separated, \\N for NULL, backslash escapes)."""

import json
import math
import random

import pandas as pd
import pytest

from worker.features import coerce, frame_from_features, infer_kinds
from worker.retrain import parse_copied_rows


def jsonb_text(value) -> str:
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {jsonb_text(value[k])}"
                               for k in keys) + "}"
    if isinstance(value, float) and value == int(value) and abs(value) >= 1e16:
        return str(int(value))           # jsonb prints numbers without exponent
    return json.dumps(value, ensure_ascii=False)


COPY_ESCAPES = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                "\t": "\\t", "\v": "\\v"}


def copy_text(value):
    if value is None:
        return "\\N"
    return "".join(COPY_ESCAPES.get(c, c) for c in value)


def copy_lines(rows):
    """(id, features, label, prediction) -> COPY text lines, oldest first."""
    return [f"{i}\t{copy_text(jsonb_text(f))}\t{copy_text(label)}\t{copy_text(prediction)}\n"
            .encode() for i, f, label, prediction in rows]


def reference(rows):
    """What the row-by-row loader built: psycopg's json.loads of each jsonb."""
    features = [json.loads(jsonb_text(f)) for _, f, _, _ in rows]
    return features, frame_from_features(features)


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame):
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        x, y = a[column], b[column]
        assert x.dtype == y.dtype, (column, x.dtype, y.dtype)
        if x.dtype == object:
            norm = [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v
                    for v in x]
            other = [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v
                     for v in y]
            assert norm == other, column
            assert [type(v) for v in norm] == [type(v) for v in other], column
        else:
            pd.testing.assert_series_equal(x, y, check_exact=True)


def check(rows):
    lines = copy_lines(rows)
    data = parse_copied_rows(lines)
    features, frame = reference(rows)
    assert_same_frame(frame, data.frame)
    assert data.row_ids == [r[0] for r in rows]
    assert data.labels == [r[2] for r in rows]
    assert data.predictions == [r[3] for r in rows]
    assert data.features[:] == features
    assert [data.features[i] for i in (0, len(rows) - 1)] == [features[0], features[-1]]
    kinds = infer_kinds(frame)
    assert infer_kinds(data.frame) == kinds
    assert_same_frame(coerce(frame, kinds), coerce(data.frame, kinds))
    return data


def ordinary(n, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        f = {"amount": round(rng.lognormvariate(3, 1), 2), "age": rng.randint(18, 90),
             "score": rng.gauss(0, 1), "country": rng.choice(["CH", "Zürich", "São Paulo"]),
             "channel": rng.choice(["web", "c:\\path", 'say "hi"', "tab\there", "new\nline"]),
             "vip": rng.random() < 0.3}
        if rng.random() < 0.1:
            f["score"] = None
        if rng.random() < 0.1:
            del f["amount"]
        if rng.random() < 0.05:
            f["vip"] = None
        rows.append((1000 + i, f, rng.choice(["yes", "no", "a\\b", "tab\t", "\\N", "x\x01"]),
                     rng.choice(["yes", "no", None, "new\nline"])))
    return rows


@pytest.mark.parametrize("n", [2000, 20000])    # 20000 rows: beyond pyarrow's 1 MB blocks
def test_ordinary_rows_take_the_fast_path_and_match(n):
    data = check(ordinary(n))
    assert not isinstance(data.features, list)        # parsed lazily: the fast path


def test_sparse_keys_keep_the_order_of_first_appearance():
    rows = [(1, {"b": 1}, "x", None), (2, {"a": 2.5, "zz": "q"}, "y", None),
            (3, {"ccc": True, "b": 3}, "x", None), (4, {}, "y", "y")]
    check(rows)


@pytest.mark.parametrize("values", [
    [None, None, None],                      # null throughout
    [True, None, False],                     # booleans with a JSON null
    [1, None, 3],                            # integers with a null: float64
    [1, 2.5, -0.0],                          # integers and floats
    ["2024-01-01T10:00:00", "2024-01-02T11:00:00", None],   # read as timestamps by pyarrow
    ["2024-01-01", "x", None],
    [1, "two", None],                        # mixed: the exact path
    [True, 1, None],                         # mixed
    [10**30, 1, 2],                          # beyond 64 bits
    [1.5e30, 2.0, 3.0],                      # printed by jsonb as a long integer
    [9007199254740993, 1.5, 2],              # beyond double precision, within int64
    [0.1, 1e-300, 123456.789],
])
def test_every_kind_of_column_matches(values):
    rows = [(i + 1, {"v": v, "n": i}, "a", "b") for i, v in enumerate(values)]
    rows.append((len(rows) + 1, {"n": 99}, "a", None))   # and one row without the key
    check(rows)


def test_no_rows_and_rows_without_features():
    data = parse_copied_rows([])
    assert len(data) == 0 and data.frame.shape == (0, 0)
    data = check([(1, {}, "a", None), (2, {}, "b", "a")])
    assert data.frame.shape == (2, 0)


def test_many_rows_of_random_messy_features_match():
    rng = random.Random(3)
    pools = [lambda: rng.gauss(0, 1e3), lambda: rng.randint(-10, 10), lambda: None,
             lambda: rng.choice(["a", "b", "é", "\\", "\"", ""]), lambda: rng.random() < 0.5]
    for column_kinds in range(20):
        chosen = {f"k{j}": rng.choice(pools) for j in range(rng.randint(1, 6))}
        rows = []
        for i in range(300):
            f = {k: make() for k, make in chosen.items() if rng.random() < 0.9}
            rows.append((i + 1, f, rng.choice(["x", "y"]), None))
        check(rows)
