"""Errors a user sees as one readable line (the CLI prints them, no traceback)."""


class UserError(Exception):
    """Something the user can fix: a bad URL, an unknown model, a bad value."""


def unknown_model(model: str) -> UserError:
    """The one message for a model the database does not know, whichever
    command met it (they all exit 2)."""
    return UserError(f"unknown model {model!r}: it has no training data, metrics or policy")
