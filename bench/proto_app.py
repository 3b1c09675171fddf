"""The issue's reference prototype: Flask + SQLAlchemy Core + psycopg, no auth, no registry.

The read bench serves this under the same gunicorn settings as DMS and drives the same page
through it, so "what a minimal app adds on this machine" is measured in the same run rather than
quoted from another machine. It reads `BENCH_PROTO_URL` (database) and `BENCH_PROTO_SCHEMA`.
"""

from __future__ import annotations

import decimal
import os
from typing import Any

import orjson
import sqlalchemy as sa
from flask import Flask, Response, request


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(type(value).__name__)


def create_app() -> Flask:
    """Return the prototype app: `GET /read?category=&count=exact|estimated|none` and `/healthz`."""
    engine = sa.create_engine(os.environ["BENCH_PROTO_URL"], isolation_level="AUTOCOMMIT")
    items = sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("category", sa.Integer),
        sa.Column("name", sa.Text),
        sa.Column("price", sa.Numeric(10, 2)),
        sa.Column("created", sa.Date),
        schema=os.environ["BENCH_PROTO_SCHEMA"],
    )
    app = Flask(__name__)
    app.get("/healthz")(lambda: "ok")

    @app.get("/read")
    def read() -> Response:
        where = items.c.category == int(request.args["category"])
        page = sa.select(items).where(where).order_by(items.c.price, items.c.id).limit(51)
        with engine.connect() as conn:
            result = conn.execute(page)
            keys = list(result.keys())
            records = [dict(zip(keys, row, strict=True)) for row in result.all()[:50]]
            count = None
            if request.args.get("count") == "exact":
                total = sa.select(sa.func.count()).select_from(items).where(where)
                count = conn.execute(total).scalar_one()
            elif request.args.get("count") == "estimated":
                plan = sa.select(items.c.id).where(where).compile(conn)
                explained = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(plan), plan.params)
                count = explained.scalar_one()[0]["Plan"]["Plan Rows"]
        body = {"records": records, "count": count, "limit": 50, "offset": 0}
        out = orjson.dumps(body, default=_default, option=orjson.OPT_NON_STR_KEYS)
        return Response(out, mimetype="application/json")

    return app
