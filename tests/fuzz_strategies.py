"""Hypothesis strategies for hostile input, shared by the fuzz tests
(tests/integration/test_fuzz_input.py against the database,
tests/unit/test_fuzz_features.py against the training code).

Everything is reproducible: the tests run with ``derandomize=True``, so CI
sees the same examples every time. For a longer hunt on a laptop:
``PG_RETRAIN_FUZZ_SCALE=20`` runs twenty times the examples, and
``PG_RETRAIN_FUZZ_RANDOM=1`` draws new ones on every run.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Settings of every fuzz test: reproducible (derandomized, no example
#: database), no deadline (a database round trip varies), and the database
#: fixture is per test function on purpose (tables are reset per example).
FUZZ = settings(
    deadline=None,
    derandomize=not os.environ.get("PG_RETRAIN_FUZZ_RANDOM"),
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def fuzz(max_examples: int):
    """FUZZ with a number of examples (times PG_RETRAIN_FUZZ_SCALE)."""
    scale = float(os.environ.get("PG_RETRAIN_FUZZ_SCALE", "1"))
    return settings(FUZZ, max_examples=max(1, round(max_examples * scale)))


# -- Text ----------------------------------------------------------------------

#: Any Unicode text PostgreSQL can hold: no NUL, no lone surrogates (which
#: UTF-8 cannot encode).
PG_TEXT_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

#: Texts that are odd on purpose: combining marks, right-to-left, emoji,
#: zero-width, whitespace only, SQL and JSON metacharacters, and the
#: composed/decomposed forms of one letter (different strings to PostgreSQL).
ODD_TEXTS = [
    "é",                 # U+00E9, composed
    "e\u0301",           # e + combining acute: looks the same, is not equal
    "\u200b",            # zero-width space
    " ",
    "\t\n",
    "שלום",
    "🤖💥",
    "'; DROP TABLE training_data; --",
    '"\\',
    "\\u0000",           # the six characters, not a NUL
    "null",
    "NaN",
    "Infinity",
    "\U0010fffd",        # the last private-use code point
    "\ufeff",            # BOM
]


def pg_text(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(PG_TEXT_CHARS, min_size=min_size, max_size=max_size)


def hostile_text(min_size: int = 0) -> st.SearchStrategy[str]:
    """Text PostgreSQL can hold, odd or long."""
    return st.one_of(
        pg_text(min_size=min_size),
        st.sampled_from([t for t in ODD_TEXTS if len(t) >= min_size]),
        st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "🤖"]),
                  st.integers(1000, 20000)).filter(lambda t: len(t) >= min_size),
    )


# -- JSON feature objects -------------------------------------------------------

class RawJSON(str):
    """JSON text written as is: a number no Python float holds (``1e400``),
    a token JSON forbids (``NaN``), or ``null`` (Python's None would be SQL
    NULL)."""


#: Valid JSON numbers beyond double precision or at its edges.
RAW_NUMBERS = ["1e400", "-1e400", "1e-400", "1e-320", "1e308", "-1e308", "-0",
               "0.0000000000000000000001", "123456789012345678901234567890.5",
               "4.9e-324", "1.7976931348623157e308"]


def to_json_text(value) -> str:
    """JSON text of a feature object, with RawJSON values written as is."""
    if isinstance(value, RawJSON):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {to_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json_text(v) for v in value) + "]"
    return json.dumps(value)


def json_numbers() -> st.SearchStrategy:
    return st.one_of(
        st.integers(-(2**70), 2**70),
        st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([1e308, -1e308, 1e-320, 5e-324, -0.0, 0.1, 1.7976931348623157e308]),
    )


def json_scalars(raw: bool = True) -> st.SearchStrategy:
    """A feature value: number, string, boolean or null."""
    parts = [st.none(), st.booleans(), json_numbers(), hostile_text()]
    if raw:
        parts.append(st.sampled_from(RAW_NUMBERS).map(RawJSON))
    return st.one_of(*parts)


def feature_keys() -> st.SearchStrategy[str]:
    """Feature names: empty, unicode, odd, very long."""
    return st.one_of(
        pg_text(max_size=8),
        st.sampled_from(ODD_TEXTS + ["", "x", "key with spaces", "$.*", "@", "a.b"]),
        st.builds(lambda n: "k" * n, st.integers(1000, 100_000)),
    )


def flat_features(raw: bool = True, max_size: int = 6) -> st.SearchStrategy[dict]:
    """A flat JSON object of scalars (the empty object included)."""
    return st.dictionaries(feature_keys(), json_scalars(raw), max_size=max_size)


def nested_values() -> st.SearchStrategy:
    """An object or an array, possibly deep, possibly empty."""
    leaf = json_scalars(raw=False)
    nested = st.recursive(
        st.one_of(st.lists(leaf, max_size=3), st.dictionaries(pg_text(max_size=4), leaf, max_size=3)),
        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                st.dictionaries(pg_text(max_size=4), inner, max_size=3)),
        max_leaves=10,
    )
    deep = st.builds(
        lambda depth, kind: _deep(depth, kind), st.integers(2, 500), st.sampled_from("[{"))
    return st.one_of(nested, deep, st.just([]), st.just({}))


def _deep(depth: int, kind: str):
    value = 1
    for _ in range(depth):
        value = [value] if kind == "[" else {"a": value}
    return value


def bad_features() -> st.SearchStrategy:
    """JSON that is valid but not a flat object of scalars: a nested object
    or array under some key, or not an object at all."""
    with_nested = st.builds(
        lambda flat, key, value: {**flat, key: value},
        flat_features(raw=False, max_size=3), feature_keys(), nested_values())
    not_an_object = st.one_of(
        st.lists(json_scalars(raw=False), max_size=3), hostile_text(), json_numbers(),
        st.booleans(), st.just(RawJSON("null")),
        nested_values().filter(lambda v: not isinstance(v, dict)))
    return st.one_of(with_nested, not_an_object)


def model_names() -> st.SearchStrategy[str]:
    """Model names: odd, unicode, up to the 200 characters the schema allows
    (model_name_1_to_200_characters)."""
    return hostile_text(min_size=1).filter(lambda t: len(t) <= 200)
