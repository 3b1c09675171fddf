"""The soak's load: the shared `Run` (server, stop flag, counters, write log, violations) and
the threads it runs — readers paging with cursors, writers logging every acknowledged write,
schema changers, CSV importers — plus the tables they work on (used by bench/soak.py).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

from bench.common import multipart_file

ENDED = {"succeeded", "completed_with_errors", "failed", "cancelled"}
WRITER_FIELDS = {
    "title": "text not null",
    "n": "integer",
    "amount": "numeric(10,2)",
    "code": "varchar(40) unique",
    "tag": "varchar(20) index",
}
DDL_FIELDS = {"label": "text", "qty": "integer"}
DDL_SEED_ROWS = 300


class Run:
    """Everything the threads share: the server, the stop flag, counters and violations."""

    def __init__(self, base: str, auth: str, log_path: Path) -> None:
        self.auth = auth
        self.netloc = urlparse(base).netloc
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.read_ms: list[float] = []
        self.read_rows = 0
        self.events: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.log_path = log_path
        self.log = log_path.open("a", buffering=1)

    def event(self, name: str, n: int = 1) -> None:
        """Count something that happened."""
        with self.lock:
            self.events[name] += n

    def violation(self, message: str) -> None:
        """Record a broken promise (printed at the end, repeats counted; the run exits 1)."""
        with self.lock:
            self.violations[message] += 1

    def count(self, kind: str, status: int) -> None:
        """Count one answer (the summary turns every 5xx into a violation)."""
        with self.lock:
            self.statuses[(kind, status)] += 1

    def ack(self, table: str, op: str, ids: list[int]) -> None:
        """Log an acknowledged (2xx) write: the log alone predicts each table's row count."""
        line = json.dumps({"t": round(time.time(), 3), "table": table, "op": op, "ids": ids})
        with self.lock:
            self.log.write(line + "\n")
            self.events[f"acknowledged {op}"] += 1

    def call(
        self,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, Any, float]:
        """Send one JSON request (a fresh connection unless one is given); count its status."""
        own = conn is None
        connection = conn or http.client.HTTPConnection(self.netloc, timeout=120)
        headers = {"Authorization": f"Bearer {self.auth}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = path + ("?" + urlencode(query) if query else "")
        started = time.perf_counter()
        try:
            connection.request(method, url, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            if own:
                connection.close()
        elapsed = time.perf_counter() - started
        self.count(kind, response.status)
        ctype = response.getheader("Content-Type") or ""
        if response.status >= 400 and not ctype.startswith("application/json"):
            self.violation(f"{kind} {response.status} is not JSON: {raw[:120]!r}")
        answer = json.loads(raw) if ctype.startswith("application/json") else raw
        return response.status, answer, elapsed


def reader(run: Run, tables: list[tuple[str, list[str]]], seed: int) -> None:
    """Page through tables with cursors; every page 200, no id twice in one pass."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(run.netloc, timeout=120)
    while not run.stop.is_set():
        table, sorts = rng.choice(tables)
        query = {"table_name": table, "limit": str(rng.choice([50, 200, 500])), "count": "exact"}
        query["sort_by"] = rng.choice(sorts)
        seen: set[int] = set()
        for _page in range(40):
            try:
                status, body, seconds = run.call(
                    "read", "GET", "/crud/read_records/", None, query, conn
                )
            except (OSError, http.client.HTTPException):
                conn.close()  # an idle keep-alive connection closed by the server: reads retry
                conn = http.client.HTTPConnection(run.netloc, timeout=120)
                continue
            if status != 200:
                run.violation(f"read {table} answered {status} {_code(body)}")
                break
            ids = [record["id"] for record in body["records"]]
            with run.lock:
                run.read_ms.append(seconds * 1000)
                run.read_rows += len(ids)
            if seen.intersection(ids) or len(set(ids)) != len(ids):
                run.violation(f"read {table} sort {query['sort_by']}: a cursor showed an id twice")
            seen.update(ids)
            if not body["next_cursor"] or run.stop.is_set():
                break
            query = {**query, "cursor": body["next_cursor"], "count": "none"}
        run.event("read passes")
    conn.close()


def _code(body: Any) -> str:
    """Return an error body's code and message without the request id (so repeats group)."""
    if isinstance(body, dict):
        return f"{body.get('code')}: {str(body.get('message')).split(' (request id')[0][:120]}"
    return repr(body)[:120]


def writer(run: Run, table: str, seed: int) -> None:
    """Create, bulk-create, update and delete on our own table; log every acknowledged write."""
    rng = random.Random(seed)
    live: dict[int, str] = {}  # id -> its unique code, for every row we know exists
    serial = 0

    def row() -> dict[str, Any]:
        nonlocal serial
        serial += 1
        n, code, tag = rng.randrange(10**6), f"{table}-{serial}", rng.choice("abcdef")
        return {"title": f"t{serial}", "n": n, "amount": f"{serial}.25", "code": code, "tag": tag}

    while not run.stop.is_set():
        roll, body = rng.random(), {"table_name": table}
        target = rng.choice(list(live)) if live else 0
        if roll < 0.35 or not live:
            op, method, path, body["data"] = "create", "POST", "/crud/create_record/", row()
        elif roll < 0.5:
            op, method, path = "create", "POST", "/crud/create_records/"
            body["records"] = [row() for _ in range(rng.randint(2, 25))]
        elif roll < 0.72:
            op, method, path = "update", "PUT", "/crud/update_record/"
            body.update(id=target, data={"n": rng.randrange(10**6)})
        elif roll < 0.92:
            op, method, path, body["id"] = "delete", "DELETE", "/crud/delete_record/", target
        else:
            # Refused writes must store nothing: a bad type (400) or a taken unique code (409).
            bad = {"n": "not a number"} if roll < 0.96 else {"code": live[target]}
            op, method, path = "refused", "POST", "/crud/create_record/"
            body["data"] = {**row(), **bad}
        try:
            status, answer, _ = run.call("write", method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            # The outcome of this write is unknown: the prediction can no longer be trusted.
            run.violation(f"{op} in {table} got no answer: {exc!r}")
            continue
        if op == "refused":
            if status in (400, 409):
                run.event("refused writes")
                continue
            run.violation(f"a write that should fail in {table} answered {status}")
        if status not in (200, 201):
            run.violation(f"{op} ({path}) in {table} answered {status} {_code(answer)}")
            continue
        if op == "delete":
            del live[target]
        records = answer.get("records", [answer]) if method == "POST" else [{"id": target}]
        live.update((r["id"], r["code"]) for r in records if "code" in r)
        run.ack(table, "create" if op == "refused" else op, [r["id"] for r in records])


def schema_changer(run: Run, table: str, seed: int) -> None:
    """Cycle add -> rename -> index -> drop index -> remove column; 409 (busy) is a retry."""
    rng = random.Random(seed)
    cycle = 0
    step = 0
    while not run.stop.is_set():
        column, renamed = f"c{cycle}", f"r{cycle}"
        steps = [
            ("/schemas/add_column/", {"column_name": column, "column_type": "integer default 7"}),
            ("/schemas/rename_column/", {"column_name": column, "new_name": renamed}),
            ("/schemas/create_index/", {"columns": [renamed, "qty"]}),
            ("/schemas/drop_index/", {"columns": [renamed, "qty"]}),
            ("/schemas/remove_column/", {"column_name": renamed}),
        ]
        path, body = steps[step]
        try:
            status, answer, _ = run.call("schema", "POST", path, {"table_name": table, **body})
        except (OSError, http.client.HTTPException) as exc:
            run.violation(f"schema change {path} on {table} got no answer: {exc!r}")
            return  # its outcome is unknown: this cycle cannot go on
        if status == 200:
            run.event("schema changes")
            step += 1
            if step == len(steps):
                step, cycle = 0, cycle + 1
        elif status == 409:
            run.event("schema changes busy (409)")
        else:
            run.violation(f"schema change {path} on {table} answered {status} {_code(answer)}")
            return
        time.sleep(rng.uniform(0.0, 0.05))


def importer(run: Run, table: str, path: Path, result: dict[str, Any]) -> None:
    """Upload one CSV (streamed), then follow its job until it ends."""
    body, length, content_type = multipart_file(path, {"table_name": table})

    started = time.perf_counter()
    conn = http.client.HTTPConnection(run.netloc, timeout=600)
    try:
        conn.request(
            "POST",
            "/import/upload/",
            body=body,
            headers={
                "Authorization": f"Bearer {run.auth}",
                "Idempotency-Key": f"soak-{table}",
                "Content-Type": content_type,
                "Content-Length": str(length),
            },
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
    except (OSError, http.client.HTTPException) as exc:
        run.violation(f"upload into {table} got no answer: {exc!r}")
        return
    finally:
        conn.close()
    run.count("upload", response.status)
    if response.status != 202:
        run.violation(f"upload into {table} answered {response.status}: {answer}")
        return
    result["job_id"] = answer["job_id"]
    while True:
        status, job, _ = run.call("job", "GET", f"/import/jobs/{answer['job_id']}/")
        if status == 200 and job["status"] in ENDED:
            result.update(job=job, seconds=time.perf_counter() - started)
            return
        if status != 200:
            run.violation(f"job of {table} answered {status}: {job}")
            return
        if result.get("give_up"):
            return
        time.sleep(0.25)


def api(run: Run, path: str, body: dict[str, Any], expect: int) -> Any:
    """Make a setup request that must succeed."""
    status, answer, _ = run.call("setup", "POST", path, body)
    if status != expect:
        raise RuntimeError(f"setup {path} answered {status}: {answer}")
    return answer
