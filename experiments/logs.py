"""One line per event: the project's and Flower's INFO lines once, third-party chatter at WARNING.

Under ``python -m experiments.run`` Hydra configures logging from ``conf/hydra/job_logging/
keco.yaml`` (the root at WARNING with one console and one file handler, ``keco`` and ``flwr`` at
INFO). Flower adds its own console handler to the ``flwr`` logger when it is imported, and sets
that logger to DEBUG, so every Flower line would print twice (once in Flower's format on stderr,
once through the root's handler) with its DEBUG lines on top: :func:`route_flower_logs` removes
Flower's console handler, puts the logger back at INFO and drops the one deprecation banner that
``run_simulation`` prints on every call (the project calls it deliberately; ``flwr run`` is the
other supported way). Flower's own processes (``flwr run``, SuperLink, SuperNodes) keep Flower's
logging as it is.
"""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
INFO_LOGGERS = ("keco", "flwr", "experiments", "__main__")
"""Loggers shown at INFO; everything else (databases, Ray, plotting, HTTP) from WARNING up."""


def setup_logging() -> None:
    """Outside Hydra (no handler on the root yet): the same levels and format as under it."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format=FORMAT, datefmt=DATE_FORMAT)
    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


class _DropBanner(logging.Filter):
    """Drops Flower's ``run_simulation`` deprecation banner (a multi-line WARNING per call)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        args = record.args if isinstance(record.args, tuple) else ()
        return not (
            text.startswith("DEPRECATED FEATURE") and any("run_simulation" in str(a) for a in args)
        )


def route_flower_logs() -> None:
    """Send Flower's log lines through the root's handlers only, at INFO (see the module
    docstring). Idempotent; call it before ``flwr.simulation.run_simulation``."""
    from flwr.supercore.logger import FLOWER_LOGGER, ConsoleHandler

    setup_logging()
    FLOWER_LOGGER.setLevel(logging.INFO)
    FLOWER_LOGGER.propagate = True
    for handler in list(FLOWER_LOGGER.handlers):
        if isinstance(handler, ConsoleHandler):
            FLOWER_LOGGER.removeHandler(handler)
    if not any(isinstance(f, _DropBanner) for f in FLOWER_LOGGER.filters):
        FLOWER_LOGGER.addFilter(_DropBanner())
    # Ray's notice about a future default (GPU env vars with num_gpus=0) on every worker: take
    # the future default now, which is what a CPU-only simulation wants anyway
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
