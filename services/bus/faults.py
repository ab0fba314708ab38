"""Named crash points for fault-injection tests.

``TETHER_FAULT=<name>`` makes the process die (as if by ``kill -9``) the
first time it reaches that point, so tests can prove that a crash exactly
there loses nothing and applies nothing twice. Unset in production.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def crash_point(name: str) -> None:
    if os.environ.get("TETHER_FAULT") == name:
        logger.critical("fault injection: crashing at %s", name)
        logging.shutdown()
        os._exit(137)
