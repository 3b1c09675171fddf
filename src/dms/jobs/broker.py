"""Broker selection: Redis when a URL is given, else a StubBroker for the in-process worker."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

QUEUE = "dms"


class PromptRedisBroker(RedisBroker):
    """A Redis broker whose idle consumers poll at least every `idle_poll_ms`.

    dramatiq's Redis consumer backs off exponentially while its queue is empty, up to the
    worker timeout (1 s by default), so a job sent to an idle worker waited half a second on
    average before it started; on a 100k-row import that is longer than the import. A fetch is
    one small Lua call, so twenty a second per idle worker costs Redis next to nothing.
    """

    def __init__(self, *, idle_poll_ms: int, **options: object) -> None:
        super().__init__(**options)
        self.idle_poll_ms = max(1, idle_poll_ms)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        """Return a consumer of `queue_name` whose idle back-off stops at `idle_poll_ms`."""
        return super().consume(queue_name, prefetch, min(timeout, self.idle_poll_ms))


def build_broker(url: str | None, idle_poll_ms: int) -> dramatiq.Broker:
    """Return a Redis broker for `url`, or a StubBroker when it is empty."""
    if url:
        # heartbeat: a worker silent this long is presumed dead and its messages are requeued.
        return PromptRedisBroker(
            url=url,
            heartbeat_timeout=60_000,
            dead_message_ttl=7 * 86_400_000,
            idle_poll_ms=idle_poll_ms,
        )
    return StubBroker()
