"""The ``worker`` console script's entry point.

It installs the SIGTERM/SIGINT handler before importing anything else of
pg-retrain (click, psycopg, and later MLflow and scikit-learn take seconds
to import on a busy machine), so that a signal at any moment stops the
process cleanly: see worker/signals.py.
"""

from __future__ import annotations

import sys


def main() -> None:
    from . import signals

    signals.install()
    try:
        from .cli import main as cli_main
    except signals.Stop:
        sys.exit(0)
    if signals.stop_requested():
        sys.exit(0)
    cli_main()
