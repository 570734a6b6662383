"""Where the project's SQL and migrations live: in a checkout, the top-level
folders; in an installed wheel, the copies packed under worker/_data."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _data_root() -> Path:
    packed = _PACKAGE / "_data"
    return packed if (packed / "migrations").is_dir() else _CHECKOUT


def migrations_dir() -> Path:
    return _data_root() / "migrations"


def sql_dir() -> Path:
    return _data_root() / "sql"


def alembic_ini() -> Path:
    return _data_root() / "alembic.ini"
