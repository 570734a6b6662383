"""Errors a user sees as one readable line (the CLI prints them, no traceback)."""


class UserError(Exception):
    """Something the user can fix: a bad URL, an unknown model, a bad value."""
