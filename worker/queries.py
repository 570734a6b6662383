"""The worker's SQL, loaded from sql/queries.sql by name.

Keeping queries in one .sql file makes them reviewable as SQL (and greppable
next to the schema) instead of scattered through Python strings.
"""

from __future__ import annotations

import re
from functools import cache

from .paths import sql_dir

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    text = (sql_dir() / "queries.sql").read_text()
    parts = _HEADER.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}


def query(name: str) -> str:
    try:
        return _load()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries.sql") from None
