"""Tokens: login, every bad-token case, rotation with reuse detection, revoke, throttling."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import jwt as pyjwt
import pytest
from argon2 import PasswordHasher
from sqlalchemy import event, func, insert, select, update

from dms.auth import tokens
from dms.auth import users as users_module
from dms.engine.errors import ValidationFailed
from dms.tables import login_failures, token_families, users
from tests.conftest import PASSWORD, SECRET, bearer, login

PROTECTED = "/api/token/revoke/"


def assert_401(response):
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.get_json()
    assert body["status"] == 401 and body["code"] == "unauthorized" and body["message"]
    return body


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_login_returns_tokens_that_open_protected_endpoints(client, make_user):
    user = make_user()
    pair = login(client, user.username)
    assert set(pair) == {"access", "refresh"}
    assert client.post(PROTECTED, headers=bearer(pair["access"])).status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"username": "nobody-here", "password": PASSWORD}, {"username": "x", "password": ""}],
)
def test_bad_credentials_answer_401(client, body):
    assert_401(client.post("/api/token/", json=body))


def test_a_hash_made_with_older_settings_logs_in_and_is_remade(app, client, make_user):
    user = make_user()
    engine = app.extensions["dms"].db.engine
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=2).hash(PASSWORD)
    with engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == user.id).values(password_hash=old))
    assert login(client, user.username)["access"]
    with engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.id == user.id)).scalar()
    assert stored != old and stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert login(client, user.username)["access"]  # the new hash verifies too


def test_a_login_for_an_unknown_user_verifies_a_password_hash_too(client):
    # Timing: without a hash to verify, a wrong username would answer far sooner than a wrong
    # password, telling which usernames exist. The dummy hash is consulted only on that path.
    before = users_module._dummy_hash.cache_info()
    assert_401(client.post("/api/token/", json={"username": "nobody-here", "password": "x"}))
    after = users_module._dummy_hash.cache_info()
    assert after.hits + after.misses == before.hits + before.misses + 1


def test_wrong_password_for_existing_user_answers_401(client, make_user):
    user = make_user()
    assert_401(client.post("/api/token/", json={"username": user.username, "password": "nope"}))


@pytest.mark.parametrize("body", [{}, {"username": 5, "password": []}, {"username": "a"}])
def test_login_with_malformed_body_answers_400(client, body):
    response = client.post("/api/token/", json=body)
    assert response.status_code == 400
    assert response.get_json()["code"] == "validation_error"


def _tokens(client, make_user):
    return login(client, make_user().username)


def test_missing_header_answers_401(client):
    assert_401(client.post(PROTECTED))


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearer abc", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Token x", "bearer"],
)
def test_malformed_authorization_answers_401(client, header):
    assert_401(client.post(PROTECTED, headers={"Authorization": header}))


def test_tampered_payload_answers_401(client, make_user):
    access = _tokens(client, make_user)["access"]
    header, payload, signature = access.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["adm"] = True
    assert_401(client.post(PROTECTED, headers=bearer(f"{header}.{_b64(claims)}.{signature}")))


def test_token_signed_with_another_key_answers_401(client, make_user):
    access = _tokens(client, make_user)["access"]
    claims = pyjwt.decode(access, options={"verify_signature": False})
    forged = pyjwt.encode(claims, "another-secret-that-is-also-long-enough-000", algorithm="HS256")
    assert_401(client.post(PROTECTED, headers=bearer(forged)))


def test_alg_none_token_answers_401(client, make_user):
    access = _tokens(client, make_user)["access"]
    claims = pyjwt.decode(access, options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert_401(client.post(PROTECTED, headers=bearer(unsigned)))


def test_refresh_token_used_as_access_answers_401(client, make_user):
    refresh = _tokens(client, make_user)["refresh"]
    assert_401(client.post(PROTECTED, headers=bearer(refresh)))


def test_expired_token_answers_401(client, make_user):
    access = _tokens(client, make_user)["access"]
    claims = pyjwt.decode(access, options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 10
    expired = pyjwt.encode(claims, SECRET, algorithm="HS256")
    body = assert_401(client.post(PROTECTED, headers=bearer(expired)))
    assert "expired" in body["message"]


def test_a_token_that_has_worked_stops_working_when_it_expires(client, make_user):
    # The process remembers tokens it has verified; expiry must still be checked on every use.
    access = _tokens(client, make_user)["access"]
    claims = pyjwt.decode(access, options={"verify_signature": False})
    claims["exp"] = int(time.time()) + 2
    short = pyjwt.encode(claims, SECRET, algorithm="HS256")
    assert client.get("/schemas/list_tables/", headers=bearer(short)).status_code == 200
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.1)
    body = assert_401(client.get("/schemas/list_tables/", headers=bearer(short)))
    assert "expired" in body["message"]


def test_a_token_without_expiry_is_verified_on_every_use(client, make_user):
    access = _tokens(client, make_user)["access"]
    claims = pyjwt.decode(access, options={"verify_signature": False})
    del claims["exp"]
    forever = pyjwt.encode(claims, SECRET, algorithm="HS256")
    for _ in range(2):  # the second use must not trip over the missing claim
        assert client.get("/schemas/list_tables/", headers=bearer(forever)).status_code == 200


def test_a_bearer_among_other_credentials_is_found(client, make_user):
    access = _tokens(client, make_user)["access"]
    headers = {"Authorization": f"Basic dXNlcjpwYXNz, Bearer {access},"}
    assert client.get("/schemas/list_tables/", headers=headers).status_code == 200
    two = {"Authorization": f"Bearer {access}, Bearer {access}"}
    assert_401(client.get("/schemas/list_tables/", headers=two))


def test_the_scheme_name_is_case_insensitive(client, make_user):
    access = _tokens(client, make_user)["access"]
    headers = {"Authorization": f"bearer {access}"}
    assert client.get("/schemas/list_tables/", headers=headers).status_code == 200


def test_refresh_rotates_and_the_old_refresh_token_dies(client, make_user):
    first = _tokens(client, make_user)
    second = client.post("/api/token/refresh/", json={"refresh": first["refresh"], "extra": 1})
    assert second.status_code == 200
    pair = second.get_json()
    assert pair["refresh"] != first["refresh"]
    assert client.post(PROTECTED, headers=bearer(pair["access"])).status_code == 200


def test_reusing_a_spent_refresh_token_revokes_the_whole_family(client, make_user):
    first = _tokens(client, make_user)
    second = client.post("/api/token/refresh/", json={"refresh": first["refresh"]}).get_json()
    assert_401(client.post("/api/token/refresh/", json={"refresh": first["refresh"]}))
    # the descendant refresh token and the family's access tokens are dead too
    assert_401(client.post("/api/token/refresh/", json={"refresh": second["refresh"]}))
    assert_401(client.post(PROTECTED, headers=bearer(second["access"])))


def test_concurrent_uses_of_one_refresh_token_let_exactly_one_through(app, client, make_user):
    refresh = _tokens(client, make_user)["refresh"]
    start, answers = threading.Barrier(4), []

    def use() -> None:
        own = app.test_client()
        start.wait()
        answers.append(own.post("/api/token/refresh/", json={"refresh": refresh}))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401]
    # The losers reused a spent token: the winner's new pair died with the family.
    (winner,) = [r.get_json() for r in answers if r.status_code == 200]
    assert_401(client.post("/api/token/refresh/", json={"refresh": winner["refresh"]}))


def test_a_login_and_a_refresh_each_write_in_one_transaction(app, client, make_user):
    user, engine, seen = make_user(), app.extensions["dms"].db.engine, []
    listeners = [
        (name, lambda *_a, name=name: seen.append(name)) for name in ("checkout", "commit")
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    try:
        pair = login(client, user.username)  # one read before the password check, one write
        assert sorted(seen) == ["checkout", "checkout", "commit"]
        seen.clear()
        assert (
            client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}).status_code == 200
        )
        assert sorted(seen) == ["checkout", "commit"]
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)


def test_other_logins_survive_a_revoked_family(client, make_user):
    user = make_user()
    one, two = login(client, user.username), login(client, user.username)
    client.post(PROTECTED, headers=bearer(one["access"]))
    assert client.post(PROTECTED, headers=bearer(two["access"])).status_code == 200


def test_revoke_kills_the_access_token_and_its_refresh_family(client, make_user):
    pair = _tokens(client, make_user)
    assert client.post(PROTECTED, headers=bearer(pair["access"])).status_code == 200
    assert_401(client.post(PROTECTED, headers=bearer(pair["access"])))
    assert_401(client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}))


@pytest.mark.parametrize("body", [{}, {"refresh": 3}, {"refresh": ""}])
def test_refresh_without_a_token_answers_400(client, body):
    assert client.post("/api/token/refresh/", json=body).status_code == 400


def test_access_token_given_to_refresh_answers_401(client, make_user):
    access = _tokens(client, make_user)["access"]
    assert_401(client.post("/api/token/refresh/", json={"refresh": access}))


def test_garbage_refresh_token_answers_401(client):
    assert_401(client.post("/api/token/refresh/", json={"refresh": "not-a-token"}))


def test_ten_failed_logins_answer_429_across_processes(client, make_user, make_app):
    user = make_user()
    other = make_app().test_client()  # a second app: its own pool, like another process
    bad = {"username": user.username, "password": "wrong-password"}
    for i in range(10):
        assert_401((client if i % 2 else other).post("/api/token/", json=bad))
    good = {"username": user.username, "password": PASSWORD}
    for c in (client, other):
        response = c.post("/api/token/", json=good)
        assert response.status_code == 429
        assert response.get_json()["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) > 0


def test_a_successful_login_resets_the_failure_count(client, make_user):
    user = make_user()
    bad = {"username": user.username, "password": "wrong-password"}
    for _ in range(9):
        client.post("/api/token/", json=bad)
    login(client, user.username)
    for _ in range(9):
        assert_401(client.post("/api/token/", json=bad))
    login(client, user.username)


def test_failed_logins_sent_at_once_still_get_at_most_ten_password_checks(app, make_user):
    # Counting first and recording after the ~20 ms check let every attempt in flight through.
    user = make_user()
    bad = {"username": user.username, "password": "wrong-password"}
    start, answers = threading.Barrier(24), []

    def attempt() -> None:
        own = app.test_client()
        start.wait()
        answers.append(own.post("/api/token/", json=bad).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 24 and set(answers) <= {401, 429}
    checked = answers.count(401)
    # Refused attempts are not failures: the lock comes with exactly ten checked ones.
    later = [app.test_client().post("/api/token/", json=bad).status_code for _ in range(12)]
    assert later == [401] * (10 - checked) + [429] * (2 + checked)


@pytest.mark.parametrize("name", ["a\u0000b", "x" * 65, "admin\n", "a b", "é"])
def test_a_username_no_user_can_have_answers_401_and_stores_nothing(app, client, name):
    engine = app.extensions["dms"].db.engine
    # The newest attempt's id, not a row count: a sweep may delete old rows meanwhile.
    newest = select(func.coalesce(func.max(login_failures.c.id), 0))
    with engine.connect() as conn:
        before = conn.execute(newest).scalar_one()
    assert_401(client.post("/api/token/", json={"username": name, "password": "whatever1"}))
    with engine.connect() as conn:
        assert conn.execute(newest).scalar_one() == before


@pytest.mark.parametrize(
    ("username", "email"), [("admin\n", "a@example.com"), ("newname", "a@example.com\n")]
)
def test_names_and_emails_with_a_trailing_newline_are_refused(app, username, email):
    with pytest.raises(ValidationFailed):
        users_module.create_user(app.extensions["dms"].db.engine, username, email, PASSWORD)


def test_a_refresh_issues_claims_from_the_user_as_it_is_now(app, client, make_user):
    user = make_user(admin=True)
    pair = login(client, user.username)
    assert pyjwt.decode(pair["access"], options={"verify_signature": False})["adm"] is True
    with app.extensions["dms"].db.engine.begin() as conn:
        conn.execute(update(users).where(users.c.id == user.id).values(is_admin=False))
    fresh = client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}).get_json()
    assert pyjwt.decode(fresh["access"], options={"verify_signature": False})["adm"] is False


def test_a_new_password_ends_every_login_and_the_same_one_ends_none(app, client, make_user):
    user, engine = make_user(), app.extensions["dms"].db.engine
    pair = login(client, user.username)
    users_module.set_password(engine, user.username, PASSWORD)  # unchanged: sessions live on
    refreshed = client.post("/api/token/refresh/", json={"refresh": pair["refresh"]})
    assert refreshed.status_code == 200
    pair = login(client, user.username)
    users_module.set_password(engine, user.username, "a-brand-new-password")
    assert_401(client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}))
    assert_401(client.post(PROTECTED, headers=bearer(pair["access"])))
    assert login(client, user.username, "a-brand-new-password")["access"]


def test_the_sweep_deletes_expired_logins_only(app, client, make_user):
    user, engine = make_user(), app.extensions["dms"].db.engine
    login(client, user.username)
    with engine.begin() as conn:
        conn.execute(
            update(token_families)
            .where(token_families.c.user_id == user.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    live = login(client, user.username)
    assert tokens.forget_expired_logins(engine) >= 1
    with engine.connect() as conn:
        left = conn.execute(
            select(token_families.c.expires_at).where(token_families.c.user_id == user.id)
        ).all()
    assert len(left) == 1 and left[0].expires_at > datetime.now(UTC)
    assert client.post("/api/token/refresh/", json={"refresh": live["refresh"]}).status_code == 200


def _checked_login(engine, user):
    """Return `user`'s login as authenticate() leaves it: password checked, no tokens yet."""
    return users_module.authenticate(
        engine, user.username, PASSWORD, max_failures=10, window_seconds=300
    )


def _count(engine, table, where) -> int:
    """Return how many rows of `table` match `where`."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()


def test_a_login_whose_password_changed_meanwhile_gets_no_tokens(app, make_user):
    # authenticate() checks the password outside the login's transaction: a new password
    # committed in between must refuse the login, or a thief's login in flight outlives it.
    user, engine = make_user(), app.extensions["dms"].db.engine
    with app.app_context():
        verified = _checked_login(engine, user)
        users_module.set_password(engine, user.username, "a-brand-new-password")
        with pytest.raises(users_module.InvalidCredentials):
            tokens.login(engine, verified, 7)
    assert _count(engine, token_families, token_families.c.user_id == user.id) == 0


def test_a_success_clears_its_own_and_earlier_attempts_not_later_ones(app, make_user):
    user, engine = make_user(), app.extensions["dms"].db.engine
    with app.app_context():
        verified = _checked_login(engine, user)
        with engine.begin() as conn:  # an attempt begun after this one, not yet checked
            conn.execute(insert(login_failures).values(username=user.username))
        tokens.login(engine, verified, 7)
    assert _count(engine, login_failures, login_failures.c.username == user.username) == 1


def test_the_sweep_forgets_attempts_older_than_the_window(app):
    engine = app.extensions["dms"].db.engine
    names = [f"spray-{i}-{time.monotonic_ns()}" for i in range(3)]
    old = datetime.now(UTC) - timedelta(seconds=301)
    with engine.begin() as conn:
        for name in names:
            conn.execute(insert(login_failures).values(username=name, at=old))
        conn.execute(insert(login_failures).values(username=names[0]))  # within the window
    assert users_module.forget_old_attempts(engine, 300) >= 3
    with engine.connect() as conn:
        left = conn.execute(
            select(login_failures.c.username).where(login_failures.c.username.in_(names))
        ).scalars()
        assert list(left) == [names[0]]
