"""Errors a user sees as one readable line (the CLI prints them, no traceback),
and the line between those and bugs, whose traceback goes to the log."""


class UserError(Exception):
    """Something the user can fix: a bad URL, an unknown model, a bad value."""


def unknown_model(model: str) -> UserError:
    """The one message for a model the database does not know, whichever
    command met it (they all exit 2)."""
    return UserError(f"unknown model {model!r}: it has no training data, metrics or policy")


def is_expected(exc: BaseException) -> bool:
    """An error that says what happened in one line: something the user can
    fix, or a database, store or network that is unreachable. Anything else
    is a bug (of pg-retrain or a library) and is logged with its traceback."""
    import psycopg

    from .training import TrainingError

    expected: tuple[type[BaseException], ...] = (UserError, TrainingError, psycopg.Error, OSError)
    try:
        from mlflow.exceptions import MlflowException
        from requests import RequestException

        expected += (MlflowException, RequestException)
    except ImportError:  # pragma: no cover - both come with mlflow
        pass
    return isinstance(exc, expected)
