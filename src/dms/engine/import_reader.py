"""Read an upload ahead of the loader: chunks -> csvreader -> converted batches, in parallel.

Parsing and converting are Python and hold the GIL; a reader *thread* would slow the loader's
COPY about as much as it saves. A big upload is therefore read in a child process (forkserver:
safe to start from a threaded worker) that sends batches of ready COPY bytes through a bounded
queue; a small one is read in a thread, which starts at once. Either way at most a few batches
are in memory, whatever the file's size.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import queue
import threading
from collections.abc import Generator, Iterator
from multiprocessing.connection import Connection as Pipe
from typing import Any

from sqlalchemy import Engine, create_engine, select
from sqlalchemy.pool import NullPool

from dms.engine.csvreader import read_records
from dms.engine.errors import InvalidRequest
from dms.engine.import_plan import Batch, ImportPlan
from dms.tables import upload_chunks

__all__ = [
    "PROCESS_MIN_BYTES",
    "Reader",
    "open_reader",
    "produce_batches",
    "stream_chunks",
    "warm_up",
]

log = logging.getLogger("dms.import")
CHUNKS_PER_QUERY = 4
PROCESS_MIN_BYTES = 2 << 20  # below this, a child process costs more than it saves
QUEUE_BATCHES = 2
_END = ("end",)


def stream_chunks(engine: Engine, job_id: str, offset: int) -> Generator[bytes, None, None]:
    """Return the upload's bytes from `offset` on, a few chunks per query (memory stays flat)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        first = conn.execute(
            select(upload_chunks.c.seq, upload_chunks.c.start_offset)
            .where(upload_chunks.c.job_id == job_id, upload_chunks.c.start_offset <= offset)
            .order_by(upload_chunks.c.seq.desc())
            .limit(1)
        ).first()
        if first is None:
            return
        seq, skip = first.seq, offset - first.start_offset
        while True:
            rows = conn.execute(
                select(upload_chunks.c.seq, upload_chunks.c.data)
                .where(upload_chunks.c.job_id == job_id, upload_chunks.c.seq >= seq)
                .order_by(upload_chunks.c.seq)
                .limit(CHUNKS_PER_QUERY)
            ).all()
            for row in rows:
                data = bytes(row.data)
                yield data[skip:] if skip else data
                skip = 0
            if len(rows) < CHUNKS_PER_QUERY:
                return
            seq = rows[-1].seq + 1


def produce_batches(
    engine: Engine, job_id: str, start: tuple[int, int], options: dict[str, Any], plan: ImportPlan,
    batch_rows: int,
) -> Generator[Batch, None, None]:  # fmt: skip
    """Return the converted batches of the upload from `start` = (offset, last line read)."""
    offset, line = start
    chunks = stream_chunks(engine, job_id, offset)
    try:
        records = read_records(
            chunks,
            encoding=options.get("encoding") or "utf-8",
            delimiter=options.get("delimiter") or ",",
            start_offset=offset,
            start_line=line + 1,
            expected_fields=plan.width,
        )
        yield from plan.batches(records, batch_rows, skip_header=offset == 0)
    finally:
        chunks.close()


class Reader:
    """Batches produced elsewhere; iterate them, then close (always)."""

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self._get()
            if isinstance(item, Batch):
                yield item
            elif item == _END:
                return
            else:  # ("error", is_invalid_request, message)
                _, invalid, message = item
                if invalid:
                    raise InvalidRequest(message)
                raise RuntimeError(f"reading the upload failed: {message}")

    def _get(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Stop producing and free the producer."""
        raise NotImplementedError


def open_reader(
    engine: Engine, job_id: str, start: tuple[int, int], options: dict[str, Any], plan: ImportPlan,
    batch_rows: int, remaining_bytes: int,
) -> Reader:  # fmt: skip
    """Return a reader of the upload from `start`: a child process for big remainders."""
    args = (job_id, start, options, plan, batch_rows)
    if remaining_bytes >= PROCESS_MIN_BYTES:
        try:
            return _ProcessReader(engine.url.render_as_string(hide_password=False), args)
        except OSError as exc:  # no process semaphores here (e.g. no /dev/shm): slower, works
            log.warning("import reader process unavailable, reading in a thread: %s", exc)
    return _ThreadReader(engine, args)


def _failure(exc: BaseException) -> tuple[str, bool, str]:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return ("error", isinstance(exc, InvalidRequest), message)


class _ThreadReader(Reader):
    def __init__(self, engine: Engine, args: tuple[Any, ...]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(engine, args), name="dms-import-reader", daemon=True
        )
        self._thread.start()

    def _run(self, engine: Engine, args: tuple[Any, ...]) -> None:
        batches = produce_batches(engine, *args)
        try:
            for batch in batches:
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the loader, raised there
            self._put(_failure(exc))
        finally:
            batches.close()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self) -> Any:
        return self._queue.get()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


_CONTEXT: Any = None
_CONTEXT_LOCK = threading.Lock()


def warm_up() -> None:
    """Start the reader processes' server now (once per process), not in the first big import."""
    process = _context().Process(target=_nothing, daemon=True)
    process.start()
    process.join()


def _nothing() -> None:
    """Do nothing (a child that only makes the forkserver start)."""


def _context() -> Any:
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            _CONTEXT = context
        return _CONTEXT


class _ProcessReader(Reader):
    def __init__(self, url: str, args: tuple[Any, ...]) -> None:
        context = _context()
        self._queue = context.Queue(maxsize=QUEUE_BATCHES)
        # The child watches the read end: EOF (we closed it, or we died) means stop.
        watch, self._alive = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_read_in_child,
            args=(url, args, self._queue, watch),
            name="dms-import-reader",
            daemon=True,
        )
        self._process.start()
        watch.close()

    def _get(self) -> Any:
        while True:
            try:
                return self._queue.get(timeout=1.0)
            except queue.Empty:
                if not self._process.is_alive():
                    code = self._process.exitcode
                    return ("error", False, f"the reader process ended (exit code {code})")

    def close(self) -> None:
        # Never read from the queue here: a child stopped mid-message would leave a partial
        # message, and Queue.get's timeout does not cover reading one (it would hang forever).
        self._alive.close()  # EOF on the child's watch pipe: stop producing
        self._process.join(timeout=2)
        if self._process.is_alive():
            self._process.terminate()  # e.g. blocked flushing a full queue nobody reads
            self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._queue.cancel_join_thread()
        self._queue.close()


def _read_in_child(url: str, args: tuple[Any, ...], out: Any, watch: Pipe) -> None:
    """The child process: produce batches into `out` until done or told to stop."""
    # Nothing here makes reference cycles, and the collector would cost a quarter of the time.
    gc.disable()
    engine = create_engine(url, poolclass=NullPool)

    def put(item: object) -> bool:
        while not watch.poll():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        out.cancel_join_thread()  # the parent stopped reading: do not wait to flush
        return False

    try:
        for batch in produce_batches(engine, *args):
            if not put(batch):
                return
        put(_END)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        put(_failure(exc))
    finally:
        engine.dispose()
