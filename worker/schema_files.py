"""Applying SQL files from migrations.

Each revision applies frozen copies of SQL; the file's SHA-256 is written in
the revision, so a later edit of a frozen file stops the migration instead of
silently replaying something else (migrations replay identically forever).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def apply_frozen_sql(op, path: Path, sha256: str) -> None:
    """Run a frozen SQL file on alembic's connection, after checking its hash."""
    actual = sha256_of(path)
    if actual != sha256:
        raise RuntimeError(
            f"{path.name} was edited after its revision was written "
            f"(sha256 {actual}, expected {sha256}); frozen migration files must "
            "never change: add a new revision instead"
        )
    # Straight to psycopg: no parameters, so the whole file runs as one
    # simple-protocol batch, and nothing in it is parsed as a bind marker.
    raw = op.get_bind().connection.driver_connection
    raw.execute(path.read_text())
