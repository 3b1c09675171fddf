"""Worker entry point: `dramatiq dms.jobs`.

dramatiq's CLI imports this module and then uses the global broker, so the broker has to be
configured here, from `DMS_BROKER_URL`, before the actors are declared on it. The web process
builds its own broker in `create_app` and never uses this one.
"""

from __future__ import annotations

import os
from functools import cache

import dramatiq
from flask import Flask

from dms.config import DEFAULTS, from_environment
from dms.engine.import_reader import warm_up
from dms.jobs.actors import declare_actors
from dms.jobs.broker import build_broker
from dms.jobs.sweeper import start_sweeper


@cache
def worker_app() -> Flask:
    """Return this worker process's app (settings from the environment), built on first use."""
    from dms.app import create_app

    return create_app({"DMS_INPROCESS_WORKER": False})


class SweeperMiddleware(dramatiq.Middleware):
    """Start the periodic sweep (stale jobs, unsent mail) in every worker process."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start the sweeper thread once the worker runs."""
        warm_up()  # the import reader's process server, before the first big import
        config = worker_app().config
        start_sweeper(lambda: worker_app().extensions["dms"], config["DMS_SWEEP_INTERVAL_SECONDS"])


# Read as the app reads them (defaults, then the environment), before any app exists.
_settings = {**DEFAULTS, **from_environment(os.environ)}
broker = build_broker(_settings["DMS_BROKER_URL"], int(_settings["DMS_WORKER_IDLE_POLL_MS"]))
broker.add_middleware(SweeperMiddleware())
dramatiq.set_broker(broker)
actors = declare_actors(broker, worker_app)
