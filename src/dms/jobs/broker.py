"""Broker selection: Redis when a URL is given, else a StubBroker for the in-process worker."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

QUEUE = "dms"


def build_broker(url: str | None) -> dramatiq.Broker:
    """Return a Redis broker for `url`, or a StubBroker when it is empty."""
    if url:
        # heartbeat: a worker silent this long is presumed dead and its messages are requeued.
        return RedisBroker(url=url, heartbeat_timeout=60_000, dead_message_ttl=7 * 86_400_000)
    return StubBroker()
