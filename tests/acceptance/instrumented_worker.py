"""The real ``worker`` command, with a pause or a fault at one step, for the
tests that signal each phase or break one step (tests/acceptance/test_stop.py).

    PG_RETRAIN_TEST_PAUSE=step:seconds   print "pausing in <step>" to stderr,
                                          then sleep (a signal meanwhile is
                                          handled as in that step)
    PG_RETRAIN_TEST_FAULT=step:kind       at that step, raise (kind "bug":
                                          ZeroDivisionError; "database":
                                          psycopg.OperationalError) or die
                                          (kind "exit": os._exit(9))

Steps: embedded (after the embedded server started), migration (after it
ran), training (before the challenger is fitted), mlflow (while the model
is written to MLflow), record (before the outcome is written), alias (before
MLflow's champion alias moves). Everything else is the unmodified worker.
"""

from __future__ import annotations

import functools
import os
import sys
import time


def _config(name: str) -> tuple[str, str]:
    step, _, value = os.environ.get(name, "").partition(":")
    return step, value


def _hook(step: str) -> None:
    pause_step, seconds = _config("PG_RETRAIN_TEST_PAUSE")
    if step == pause_step:
        # sys.__stderr__: tracking.py redirects sys.stderr while it writes to MLflow.
        print(f"pausing in {step}", file=sys.__stderr__, flush=True)
        time.sleep(float(seconds))
    fault_step, kind = _config("PG_RETRAIN_TEST_FAULT")
    if step == fault_step:
        if kind == "exit":
            os._exit(9)
        if kind == "database":
            import psycopg

            raise psycopg.OperationalError("injected: the server closed the connection")
        raise ZeroDivisionError("injected bug")


def _wrap(owner, name: str, step: str, *, after: bool = False) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if not after:
            _hook(step)
        result = original(*args, **kwargs)
        if after:
            _hook(step)
        return result

    setattr(owner, name, wrapper)


def main() -> None:
    from worker import signals

    signals.install()  # first, as the console script does
    import mlflow.sklearn  # the module itself, not MLflow's lazy stand-in

    from worker import claiming, embedded, migrate, retrain, tracking

    _wrap(embedded, "start", "embedded", after=True)
    _wrap(migrate, "upgrade", "migration", after=True)
    _wrap(retrain, "challenge", "training")
    _wrap(mlflow.sklearn, "log_model", "mlflow")
    _wrap(claiming, "finish_succeeded", "record")
    _wrap(tracking.Tracker, "set_champion", "alias")

    from worker.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
