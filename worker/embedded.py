"""An embedded PostgreSQL for users and tests with no DATABASE_URL.

The ``pgserver`` package ships PostgreSQL binaries, so a machine with nothing
but Python can run the whole system. The server listens on a Unix socket in
its data directory and is started on demand.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def start(data_dir: Path, *, delete_on_exit: bool = False):
    """Start (or reuse) the server for ``data_dir``; return its handle.

    The handle's ``url`` attribute is a libpq URL of the ``postgres`` database.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import pgserver

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(
            data_dir, cleanup_mode="delete" if delete_on_exit else None
        )
    server.url = server.get_uri()
    log.debug("embedded PostgreSQL at %s", server.url)
    return server
