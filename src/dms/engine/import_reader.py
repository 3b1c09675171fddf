"""Read an upload ahead of the loader: chunks -> csvreader -> converted batches, in parallel.

Parsing and converting are Python and hold the GIL; a reader *thread* would slow the loader's
COPY about as much as it saves. A big upload is therefore read in a child process (forkserver:
safe to start from a threaded worker) that sends batches of ready COPY bytes down a pipe into a
bounded queue; a small one is read in a thread, which starts at once. Either way at most a few
batches are in memory, whatever the file's size.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import multiprocessing
import pickle
import queue
import threading
from collections.abc import Generator, Iterator
from contextlib import closing, suppress
from multiprocessing.connection import Connection as Pipe
from typing import Any

import psycopg
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

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
PROCESS_MIN_BYTES = 2 << 20  # below this, a child process costs more than it saves
QUEUE_BATCHES = 2
PIPE_BYTES = 1 << 20  # Linux's default cap for a pipe's buffer (fs.pipe-max-size)
_END = ("end",)
CHUNKS_PER_QUERY = 4  # 1 MiB each: short statements (no statement_timeout, no long snapshot)
_DIALECT = PGDialect_psycopg()
_FIRST_CHUNK = (
    select(upload_chunks.c.seq)
    .where(
        upload_chunks.c.job_id == bindparam("job"),
        upload_chunks.c.start_offset <= bindparam("offset"),
    )
    .order_by(upload_chunks.c.seq.desc())
    .limit(1)
    .scalar_subquery()
)
# Compiled once for psycopg: the reader reads with a driver cursor, in binary.
_FIRST_PAGE = (
    select(upload_chunks.c.seq, upload_chunks.c.start_offset, upload_chunks.c.data)
    .where(upload_chunks.c.job_id == bindparam("job"), upload_chunks.c.seq == _FIRST_CHUNK)
    .compile(dialect=_DIALECT)
)
_NEXT_PAGE = (
    select(upload_chunks.c.seq, upload_chunks.c.start_offset, upload_chunks.c.data)
    .where(upload_chunks.c.job_id == bindparam("job"), upload_chunks.c.seq > bindparam("after"))
    .order_by(upload_chunks.c.seq)
    .limit(CHUNKS_PER_QUERY)
    .compile(dialect=_DIALECT)
)
_FIRST_SQL, _NEXT_SQL = str(_FIRST_PAGE), str(_NEXT_PAGE)


def stream_chunks(
    conn: psycopg.Connection[Any], job_id: str, offset: int, size: int | None = None
) -> Generator[bytes, None, None]:
    """Return the upload's bytes from `offset` on, a chunk at a time (memory stays flat).

    The chunk holding `offset` comes first on its own (the first batch waits for it), then a
    few chunks per query: one statement for the whole upload would run as long as the import,
    meet any statement_timeout and hold back VACUUM everywhere meanwhile. With `size` (the
    upload's length), chunks that vanish meanwhile (the job's user deleted, the job ended by
    another worker) are an error, not an end of file that would cut the last record short.
    """
    # Binary: bytea in text form is hex, twice the bytes to send and to decode.
    with conn.cursor(binary=True) as cur:
        first = _FIRST_PAGE.construct_params({"job": job_id, "offset": offset})
        read, rows = offset, cur.execute(_FIRST_SQL, first).fetchall()
        while rows:
            for _, start, data in rows:
                yield bytes(data[offset - start :]) if start < offset else bytes(data)
                read = start + len(data)
            if size is not None and read >= size:
                return
            params = _NEXT_PAGE.construct_params({"job": job_id, "after": rows[-1][0]})
            rows = cur.execute(_NEXT_SQL, params).fetchall()
    if size is not None and read < size:
        raise RuntimeError(f"the stored upload ends at byte {read} of {size}: it was deleted")


def produce_batches(
    conn: psycopg.Connection[Any],
    job_id: str,
    start: tuple[int, int],
    options: dict[str, Any],
    plan: ImportPlan,
    batch_rows: int,
    size_bytes: int | None = None,
) -> Generator[Batch, None, None]:
    """Return the converted batches of the upload from `start` = (offset, last line read)."""
    offset, line = start
    chunks = stream_chunks(conn, job_id, offset, size_bytes)
    try:
        records = read_records(
            chunks,
            encoding=options.get("encoding") or "utf-8",
            delimiter=options.get("delimiter") or ",",
            start_offset=offset,
            start_line=line + 1,
            expected_fields=plan.width,
        )
        yield from plan.batches(records, batch_rows, skip_header=offset == 0, size_bytes=size_bytes)
    finally:
        chunks.close()


class Reader:
    """Batches queued by a thread of this process; iterate them, then close (always)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_BATCHES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._thread.is_alive() or not self._queue.empty():
                    continue
                # Its thread always queues an end or an error: gone without one, it crashed.
                raise RuntimeError("reading the upload failed: the reader stopped") from None
            if isinstance(item, Batch):
                yield item
            elif item == _END:
                return
            else:  # ("error", is_invalid_request, message)
                _, invalid, message = item
                if invalid:
                    raise InvalidRequest(message)
                raise RuntimeError(f"reading the upload failed: {message}")

    def _produce(self) -> None:
        raise NotImplementedError

    def _put(self, item: object) -> bool:
        """Queue `item` for the loader; False once the reader is being closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Stop producing and free the producer."""
        self._stop.set()
        self._thread.join()


def open_reader(
    engine: Engine, job_id: str, start: tuple[int, int], options: dict[str, Any], plan: ImportPlan,
    batch_rows: int, size_bytes: int,
) -> Reader:  # fmt: skip
    """Return a reader of the upload from `start`: a child process for big remainders."""
    args = (job_id, start, options, plan, batch_rows, size_bytes)
    if size_bytes - start[0] >= PROCESS_MIN_BYTES:
        try:
            return _ProcessReader(_connect_params(engine), args)
        except (OSError, EOFError) as exc:  # no process server here (it died): slower, works
            log.warning("import reader process unavailable, reading in a thread: %s", exc)
    return _ThreadReader(engine, args)


def _failure(exc: BaseException) -> tuple[str, bool, str]:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return ("error", isinstance(exc, InvalidRequest), message)


class _ThreadReader(Reader):
    """Reads in a thread of this process: starts at once, shares the GIL with the loader."""

    def __init__(self, engine: Engine, args: tuple[Any, ...]) -> None:
        super().__init__("dms-import-reader")
        self._engine, self._args = engine, args
        self._thread.start()

    def _produce(self) -> None:
        try:
            with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                driver: Any = conn.connection.driver_connection
                # Closed before the connection goes back: its stream must end first.
                with closing(produce_batches(driver, *self._args)) as batches:
                    for batch in batches:
                        if not self._put(batch):
                            return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the loader, raised there
            self._put(_failure(exc))


_CONTEXT: Any = None
_CONTEXT_LOCK = threading.Lock()


def warm_up() -> None:
    """Start the reader processes' server now (once per process), not in the first big import."""
    try:
        process = _context().Process(target=_nothing, daemon=True)
        process.start()
        process.join()
    except (OSError, EOFError) as exc:  # imports will read in a thread (see open_reader)
        log.warning("import reader process server unavailable: %s", exc)


def _nothing() -> None:
    """Do nothing (a child that only makes the forkserver start)."""


def _context() -> Any:
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            context = multiprocessing.get_context("forkserver")
            # "__main__" too (the default): otherwise every reader child runs the main script
            # again (for `dramatiq`, its CLI's imports: tens of ms before the first batch).
            context.set_forkserver_preload(["__main__", __name__])
            _CONTEXT = context
        return _CONTEXT


class _ProcessReader(Reader):
    """Reads in a child process, which sends each batch down a pipe as soon as it is made.

    A thread here receives them into the queue. The child writes from its only thread: a
    multiprocessing.Queue's feeder thread would fight the parsing for the child's GIL, which
    delayed each batch by about 10 ms. The child holds the pipe's only write end, so its exit
    is our end of file; if this process dies, the child's next write fails and it stops.
    """

    def __init__(self, connect: dict[str, Any], args: tuple[Any, ...]) -> None:
        super().__init__("dms-import-receiver")
        context = _context()
        self._pipe, send = context.Pipe(duplex=False)
        _widen(send)
        self._process = context.Process(
            target=_read_in_child, args=(connect, args, send), name="dms-import-reader"
        )
        self._process.daemon = True
        try:
            self._process.start()
        finally:
            send.close()
        self._ended = False  # the child said it has finished (end or error)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while True:
                item = pickle.loads(self._pipe.recv_bytes())
                if not isinstance(item, Batch):
                    self._ended = True
                if not self._put(item) or self._ended:
                    return
        except (EOFError, OSError):  # the child died without a word, or we are closing
            self._process.join(timeout=5)
            code = self._process.exitcode
            self._put(("error", False, f"the reader process ended (exit code {code})"))
        except BaseException as exc:  # noqa: BLE001 - e.g. MemoryError: the loader must hear
            self._put(_failure(exc))

    def close(self) -> None:
        self._stop.set()
        if not self._ended:
            self._process.terminate()  # it only reads: nothing of its work needs keeping
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._thread.join()  # its recv ends: the child, the only writer, is gone
        self._pipe.close()


def _widen(pipe: Pipe) -> None:
    """Give `pipe` a buffer of up to PIPE_BYTES, where the system allows it."""
    # A batch is megabytes: through the default 64 KiB buffer it takes dozens of context
    # switches and about 5 ms; through 1 MiB, a few and under one.
    with suppress(OSError, AttributeError):  # F_SETPIPE_SZ is Linux's; the cap is a sysctl
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _connect_params(engine: Engine) -> dict[str, Any]:
    """Return psycopg.connect keywords for `engine`'s database, as its dialect makes them."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's adapters: not picklable, not needed here
    return {**params, "application_name": "dms-import-reader", "connect_timeout": 5}


class _Stopped(Exception):
    """Raised in the child when the parent no longer reads."""


def _read_in_child(connect: dict[str, Any], args: tuple[Any, ...], out: Pipe) -> None:
    """The child process: send batches down `out` until done or the parent stops reading."""
    # Nothing here makes reference cycles, and the collector would cost a quarter of the time.
    gc.disable()

    def send(item: object) -> None:
        try:
            # send_bytes, not send: send writes a bytes object in pipe-sized pieces, copying
            # the rest after each one (quadratic in the batch's size); a memoryview is not.
            out.send_bytes(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # EPIPE: the parent closed its end
            raise _Stopped from None

    try:
        # psycopg itself: an engine's first connection costs queries the reader never needs.
        with (
            psycopg.connect(autocommit=True, **connect) as conn,
            closing(produce_batches(conn, *args)) as batches,
        ):
            for batch in batches:
                send(batch)
        send(_END)
    except _Stopped:
        return
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        with suppress(_Stopped):
            send(_failure(exc))
