"""GET /usage and the budget check at send time (API.md "Settings, usage,
models"; DESIGN.md §5 "Usage and cost").

The ledger is written by the run pipeline at the end of each turn; these
tests write its rows directly so that every sum is known exactly."""

import uuid

import pytest

from conftest import _TEST_SERVERS, assert_problem, register, serve
from pipeline_util import Chat, model, pipeline_env, text_rule

SUM_KEYS = {"input_tokens", "output_tokens", "cache_creation_input_tokens",
            "cache_read_input_tokens", "cost_usd", "messages"}
ZERO = {"input_tokens": 0, "output_tokens": 0,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "cost_usd": 0, "messages": 0}


def ledger(srv, user_id, created_at, tokens=(1, 1, 0, 0), cost="0",
           model="claude-sonnet-4-5", chat_id=None, message_id=None):
    """One usage_ledger row; created_at is SQL text (a literal or an
    expression such as now()). Returns (chat_id, message_id)."""
    chat_id = chat_id or str(uuid.uuid4())
    message_id = message_id or str(uuid.uuid4())
    srv.db.query(
        "INSERT INTO usage_ledger (user_id, chat_id, message_id, model,"
        " input_tokens, output_tokens, cache_creation_input_tokens,"
        " cache_read_input_tokens, cost_usd, created_at) VALUES"
        f" (%s, %s, %s, %s, %s, %s, %s, %s, %s, {created_at})",
        (user_id, chat_id, message_id, model, *tokens, cost))
    return chat_id, message_id


def usage(srv, user, expect=200, **params):
    r = srv.get("/usage", token=user.access, params=params)
    assert r.status_code == expect, r.text
    return r


def sums(t, c, n):
    """The sums object of tokens t (4-tuple), cost c and n messages."""
    return {"input_tokens": t[0], "output_tokens": t[1],
            "cache_creation_input_tokens": t[2],
            "cache_read_input_tokens": t[3], "cost_usd": c, "messages": n}


def make_admin(srv, user):
    srv.db.query("UPDATE users SET role = 'admin' WHERE id = %s",
                 (user.id,))


@pytest.fixture
def user(server):
    return register(server)


# One month of March 2025 for a user: rows at both ends of the range and
# across a UTC day boundary, plus rows just outside and another user's.
MARCH = {"from": "2025-03-01", "to": "2025-04-01"}


@pytest.fixture
def march(server, user):
    other = register(server)
    chat_a, chat_b = sorted(str(uuid.uuid4()) for _ in range(2))
    m1, m2, m3 = (str(uuid.uuid4()) for _ in range(3))
    rows = [
        # (created_at, tokens, cost, model, chat, message)
        ("2025-03-01T00:00:00Z", (1, 1, 1, 1), "2", "claude-opus-4-5",
         chat_b, m3),
        ("2025-03-10T10:00:00Z", (100, 10, 5, 1), "0.5",
         "claude-sonnet-4-5", chat_a, m1),
        ("2025-03-10T23:59:59.999999Z", (20, 2, 0, 0), "0.000123",
         "claude-haiku-4-5", chat_a, m1),
        ("2025-03-11T00:00:00Z", (7, 3, 0, 9), "1.25", "claude-sonnet-4-5",
         chat_b, m2),
    ]
    for at, tokens, cost, model, chat, msg in rows:
        ledger(server, user.id, f"'{at}'", tokens, cost, model, chat, msg)
    # Outside: before from, at to (exclusive), and another user's row.
    ledger(server, user.id, "'2025-02-28T23:59:59.999999Z'", (1000, 0, 0, 0),
           "9")
    ledger(server, user.id, "'2025-04-01T00:00:00Z'", (1000, 0, 0, 0), "9")
    ledger(server, other.id, "'2025-03-15T12:00:00Z'", (5000, 0, 0, 0), "50",
           chat_id=chat_a)
    return {"chats": (chat_a, chat_b), "other": other}


TOTALS = sums((128, 16, 6, 11), 3.750123, 3)


def test_totals_over_a_range(server, user, march):
    r = usage(server, user, **MARCH)
    body = r.json()
    assert body == {"totals": TOTALS, "groups": []}
    # The cost is exact decimal text, not a rounded float.
    assert "3.750123" in r.text


def test_group_by_day_uses_utc_days(server, user, march):
    body = usage(server, user, group_by="day", **MARCH).json()
    assert body["totals"] == TOTALS
    assert body["groups"] == [
        dict(key="2025-03-01", **sums((1, 1, 1, 1), 2, 1)),
        dict(key="2025-03-10", **sums((120, 12, 5, 1), 0.500123, 1)),
        dict(key="2025-03-11", **sums((7, 3, 0, 9), 1.25, 1)),
    ]


def test_group_by_model(server, user, march):
    body = usage(server, user, group_by="model", **MARCH).json()
    assert body["totals"] == TOTALS
    assert body["groups"] == [
        dict(key="claude-haiku-4-5", **sums((20, 2, 0, 0), 0.000123, 1)),
        dict(key="claude-opus-4-5", **sums((1, 1, 1, 1), 2, 1)),
        dict(key="claude-sonnet-4-5", **sums((107, 13, 5, 10), 1.75, 2)),
    ]


def test_group_by_chat(server, user, march):
    chat_a, chat_b = march["chats"]
    body = usage(server, user, group_by="chat", **MARCH).json()
    assert body["totals"] == TOTALS
    # chat_a holds one message over two models: counted once.
    assert body["groups"] == [
        dict(key=chat_a, **sums((120, 12, 5, 1), 0.500123, 1)),
        dict(key=chat_b, **sums((8, 4, 1, 10), 3.25, 2)),
    ]


@pytest.mark.parametrize("params,expect", [
    # to is exclusive, from inclusive, to the microsecond.
    ({"from": "2025-03-10T23:59:59.999999Z", "to": "2025-03-11"},
     sums((20, 2, 0, 0), 0.000123, 1)),
    ({"from": "2025-03-10T23:59:59.999999Z",
      "to": "2025-03-11T00:00:00.000001Z"},
     sums((27, 5, 0, 9), 1.250123, 2)),
    ({"from": "2025-03-11", "to": "2025-03-11"}, ZERO),
    # Offsets: 01:00+01:00 is midnight UTC.
    ({"from": "2025-03-11T01:00:00+01:00", "to": "2025-03-12"},
     sums((7, 3, 0, 9), 1.25, 1)),
    ({"from": "2025-03-10T18:59:59.999999-05:00",
      "to": "2025-03-10T19:00:00-05:00"},
     sums((20, 2, 0, 0), 0.000123, 1)),
    ({"from": "2025-03-10t10:00:00.5z", "to": "2025-03-11T00:00:00.0Z"},
     sums((20, 2, 0, 0), 0.000123, 1)),
])
def test_range_bounds(server, user, march, params, expect):
    assert usage(server, user, **params).json() == \
        {"totals": expect, "groups": []}


def test_unencoded_plus_in_an_offset(server, user, march):
    # A '+' left unencoded in a query string reads as a space.
    r = server.get("/usage?from=2025-03-11T01:00:00+01:00&to=2025-03-12",
                   token=user.access)
    assert r.status_code == 200, r.text
    assert r.json()["totals"] == sums((7, 3, 0, 9), 1.25, 1)


def test_default_range_is_this_month_until_now(server, user):
    ledger(server, user.id, "now() - interval '1 second'", (3, 4, 5, 6),
           "0.75")
    ledger(server, user.id, "(date_trunc('month', now() AT TIME ZONE 'UTC')"
           " AT TIME ZONE 'UTC') - interval '1 microsecond'", (1, 0, 0, 0),
           "10")
    ledger(server, user.id, "now() + interval '1 hour'", (1, 0, 0, 0), "10")
    body = usage(server, user).json()
    assert body == {"totals": sums((3, 4, 5, 6), 0.75, 1), "groups": []}
    # Only to given: from is the start of the month before to.
    ledger(server, user.id, "'2025-02-28T23:00:00Z'", (1, 0, 0, 0), "10")
    ledger(server, user.id, "'2025-03-01T00:00:00Z'", (2, 0, 0, 0), "1")
    ledger(server, user.id, "'2025-03-11T00:00:00Z'", (4, 0, 0, 0), "10")
    body = usage(server, user, to="2025-03-11").json()
    assert body["totals"] == sums((2, 0, 0, 0), 1, 1)
    body = usage(server, user, to="2025-03-01").json()  # all of February
    assert body["totals"] == sums((1, 0, 0, 0), 10, 1)


def test_new_user_has_zero_usage(server, user):
    for group in (None, "day", "model", "chat"):
        params = {"group_by": group} if group else {}
        assert usage(server, user, **params).json() == \
            {"totals": ZERO, "groups": []}


def test_other_users_rows_are_never_included(server, user, march):
    other = march["other"]
    body = usage(server, other, group_by="chat", **MARCH).json()
    assert body == {"totals": sums((5000, 0, 0, 0), 50, 1),
                    "groups": [dict(key=march["chats"][0],
                                    **sums((5000, 0, 0, 0), 50, 1))]}


def test_admin_reads_any_user(server, user, march):
    admin = register(server)
    make_admin(server, admin)
    body = usage(server, admin, user_id=user.id, group_by="day",
                 **MARCH).json()
    assert body == usage(server, user, group_by="day", **MARCH).json()
    assert body["totals"] == TOTALS
    # Their own usage without user_id.
    assert usage(server, admin, **MARCH).json()["totals"] == ZERO
    assert_problem(usage(server, admin, expect=404,
                         user_id=str(uuid.uuid4())), 404, "not_found")
    assert_problem(usage(server, admin, expect=400, user_id="nope"), 400,
                   "bad_query")


def test_user_id_is_for_admins_only(server, user, march):
    other = march["other"]
    for target in (other.id, user.id, str(uuid.uuid4())):
        body = assert_problem(usage(server, user, expect=403,
                                    user_id=target), 403, "admin_only")
        assert "user_id" in body["detail"]


@pytest.mark.parametrize("params,field", [
    ({"from": "yesterday"}, "from"),
    ({"from": ""}, "from"),
    ({"from": "2025-02-30"}, "from"),
    ({"from": "2025-13-01"}, "from"),
    ({"from": "2025-3-1"}, "from"),
    ({"from": "2025-03-01T00:00:00"}, "from"),  # no offset
    ({"from": "2025-03-01T24:00:00Z"}, "from"),
    ({"from": "2025-03-01T00:00:00.Z"}, "from"),
    ({"from": "2025-03-01T00:00:00.1234567890Z"}, "from"),
    ({"from": "2025-03-01T00:00:00+0100"}, "from"),
    ({"from": "2025-03-01T00:00:00Zjunk"}, "from"),
    ({"from": "2025-03-01 00:00:00Z"}, "from"),
    ({"to": "2025-03-01T00:00:00+25:00"}, "to"),
    ({"to": "20250301"}, "to"),
    ({"from": "2025-03-02", "to": "2025-03-01"}, "from"),
    ({"from": "2024-01-01", "to": "2025-01-01T00:00:00.000001Z"}, "days"),
    ({"from": "2025-03-01", "to": "2025-04-01", "group_by": "week"},
     "group_by"),
    ({"group_by": ""}, "group_by"),
])
def test_bad_parameters(server, user, march, params, field):
    before = server.db.scalar("SELECT count(*) FROM usage_ledger")
    body = assert_problem(usage(server, user, expect=400, **params), 400,
                          "bad_query")
    assert field in body["detail"]
    assert server.db.scalar("SELECT count(*) FROM usage_ledger") == before


def test_longest_range_is_366_days(server, user, march):
    # 2024 is a leap year: 2024-01-01 to 2025-01-01 is exactly 366 days.
    assert usage(server, user, **{"from": "2024-01-01",
                                  "to": "2025-01-01"}).json()["totals"] == \
        ZERO
    body = usage(server, user, **{"from": "2025-01-01",
                                  "to": "2026-01-01"}).json()
    assert body["totals"] == sums((2128, 16, 6, 11), 21.750123, 5)


def test_unauthenticated(server):
    assert_problem(server.get("/usage"), 401)


# --------------------------------------------------------- budget at send

@pytest.fixture(scope="module")
def pipe(cluster, logdir, model):
    yield from serve(cluster, logdir, "budget", pipeline_env(model))


@pytest.fixture
def spender(pipe):
    _TEST_SERVERS.append(pipe)  # its log tail goes with a failure
    return register(pipe)


def set_cap(srv, user, cap):
    srv.db.query("UPDATE users SET monthly_budget_cap_usd = %s WHERE id = %s",
                 (cap, user.id))


def set_own_budget(srv, user, value):
    srv.db.query("INSERT INTO user_settings (user_id, monthly_budget_usd)"
                 " VALUES (%s, %s) ON CONFLICT (user_id) DO UPDATE"
                 " SET monthly_budget_usd = EXCLUDED.monthly_budget_usd",
                 (user.id, value))


def message_rows(srv, chat_id):
    return srv.db.scalar("SELECT count(*) FROM messages WHERE chat_id = %s",
                         (chat_id,))


def assert_refused(srv, user, chat, limit, spent):
    r = srv.post(f"/chats/{chat.id}/messages", json={"content": "hello"},
                 token=user.access)
    body = assert_problem(r, 402, "budget_exceeded")
    assert f"{spent} USD spent" in body["detail"], body
    assert f"{limit} USD limit" in body["detail"], body
    listed = srv.get(f"/chats/{chat.id}/messages", token=user.access)
    assert listed.status_code == 200 and listed.json()["items"] == []
    assert message_rows(srv, chat.id) == 0
    assert srv.db.scalar("SELECT count(*) FROM runs WHERE chat_id = %s",
                         (chat.id,)) == 0


def test_send_at_the_cap_is_refused(pipe, spender):
    chat = Chat(pipe, spender, title="b")
    set_cap(pipe, spender, "1.5")
    ledger(pipe, spender.id, "now()", cost="1")
    ledger(pipe, spender.id, "now()", cost="0.5")  # spent == limit
    assert_refused(pipe, spender, chat, "1.5", "1.5")


def test_the_lower_of_own_budget_and_cap_applies(pipe, model, spender):
    chat = Chat(pipe, spender, title="b")
    ledger(pipe, spender.id, "now()", cost="0.6")
    set_own_budget(pipe, spender, "0.5")  # no cap: own budget alone
    assert_refused(pipe, spender, chat, "0.5", "0.6")
    set_cap(pipe, spender, "5")  # the lower one still applies
    assert_refused(pipe, spender, chat, "0.5", "0.6")
    set_own_budget(pipe, spender, "0.61")  # now below the limit
    model.scenario([text_rule("hello", "Hi.")])
    sent = chat.send("hello")
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    assert message_rows(pipe, chat.id) == 2


def test_last_months_spending_does_not_count(pipe, model, spender):
    chat = Chat(pipe, spender, title="b")
    set_cap(pipe, spender, "1")
    ledger(pipe, spender.id, "(date_trunc('month', now() AT TIME ZONE 'UTC')"
           " AT TIME ZONE 'UTC') - interval '1 microsecond'", cost="100")
    ledger(pipe, spender.id, "now()", cost="0.999999")
    model.scenario([text_rule("hello", "Hi.")])
    sent = chat.send("hello")
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"


def test_no_budget_means_no_limit(pipe, model, spender):
    chat = Chat(pipe, spender, title="b")
    ledger(pipe, spender.id, "now()", cost="1000")
    model.scenario([text_rule("hello", "Hi.")])
    sent = chat.send("hello")
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"


def test_retry_over_budget_is_refused(pipe, model, spender):
    chat = Chat(pipe, spender, title="b")
    model.scenario([text_rule("hello", "Hi.")])
    sent = chat.send("hello")
    reply = sent["reply"]["id"]
    assert chat.wait_reply(reply)["status"] == "completed"
    chat.wait_idle()  # its checkpoint done: nothing rewrites the row
    pipe.db.query("UPDATE messages SET status = 'failed' WHERE id = %s",
                  (reply,))
    set_cap(pipe, spender, "0")
    r = pipe.post(f"/chats/{chat.id}/messages/{reply}/retry",
                  token=spender.access)
    assert_problem(r, 402, "budget_exceeded")
    assert message_rows(pipe, chat.id) == 2
    # Under budget again, the retry goes through.
    set_cap(pipe, spender, "1")
    r = pipe.post(f"/chats/{chat.id}/messages/{reply}/retry",
                  token=spender.access)
    assert r.status_code == 202, r.text
    assert chat.wait_reply(r.json()["reply"]["id"])["status"] == "completed"
    assert message_rows(pipe, chat.id) == 4


def test_budget_is_checked_before_the_chat(pipe, spender):
    # The budget is checked first, so an over-budget user gets 402 for
    # any chat id, theirs or not: it tells nothing about the chat, and
    # nothing is stored in it.
    owner = register(pipe)
    chat = Chat(pipe, owner, title="b")
    set_cap(pipe, spender, "0")
    r = pipe.post(f"/chats/{chat.id}/messages", json={"content": "x"},
                  token=spender.access)
    assert_problem(r, 402, "budget_exceeded")
    set_cap(pipe, spender, None)
    r = pipe.post(f"/chats/{chat.id}/messages", json={"content": "x"},
                  token=spender.access)
    assert_problem(r, 404, "not_found")
    assert message_rows(pipe, chat.id) == 0
