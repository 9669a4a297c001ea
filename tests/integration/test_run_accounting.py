"""Issue 4 through the run pipeline: usage and cost accounting exact to
the scripted model's reported usage, budgets before and during a run,
and the user's settings reaching the CLI in its sandbox (environment
variables, disallowed and allowed tools, appended prompt)."""

import json
import os
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from conftest import _TEST_SERVERS, assert_problem, register, serve
from pipeline_util import Chat, finished, model, pipeline_env

TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
          "cache_read_input_tokens")
PRICE_COLS = ("price_input", "price_output", "price_cache_write",
              "price_cache_read")


@pytest.fixture(scope="module")
def srv(cluster, logdir, model):
    yield from serve(cluster, logdir, "accounting", pipeline_env(model))


@pytest.fixture(scope="module")
def admin(srv):
    return register(srv)  # the first user of the database


@pytest.fixture
def user(srv, admin):
    _TEST_SERVERS.append(srv)
    return register(srv)


def bash_then_done(trigger, command, first_usage, second_usage):
    return [
        {"match": {"user_text_contains": trigger},
         "reply": {"blocks": [{"type": "tool_use", "name": "Bash",
                               "input": {"command": command,
                                         "description": "run it"}}],
                   "usage": first_usage}},
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "done"}],
                   "usage": second_usage}},
    ]


def run_turn(chat, content, **extra):
    sent = chat.send(content, **extra)
    return sent, chat.wait_reply(sent["reply"]["id"])


def recorded_usage(model):
    """Usage the scripted model reported per model (every answered
    /v1/messages request: the main loop and the CLI's side calls)."""
    sums = {}
    for rec in model.requests():
        if rec.get("kind") != "messages" or rec.get("status") != 200:
            continue
        usage = rec["reply"]["usage"]
        row = sums.setdefault(rec["reply"].get("model") or rec["model"],
                              dict.fromkeys(TOKENS, 0))
        for k in TOKENS:
            row[k] += usage.get(k, 0)
    return sums


def price(srv, model_id):
    row = srv.db.query(f"SELECT {', '.join(PRICE_COLS)} FROM models "
                       "WHERE %s = id OR %s LIKE id || '-%%' "
                       "ORDER BY length(id) DESC LIMIT 1",
                       (model_id, model_id))
    return row[0] if row else (0, 0, 0, 0)


def expected_cost(srv, model_id, usage):
    p = price(srv, model_id)
    total = sum(Decimal(usage[k]) * Decimal(p[i])
                for i, k in enumerate(TOKENS)) / Decimal(1000000)
    return total.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)


def test_ledger_equals_scripted_usage_and_is_priced(srv, model, user):
    u1 = {"input_tokens": 1200, "output_tokens": 80,
          "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1000}
    u2 = {"input_tokens": 1500, "output_tokens": 45,
          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1200}
    model.scenario(bash_then_done("count me", "echo one > one.txt", u1, u2))
    chat = Chat(srv, user, permission_mode="auto")
    sse = chat.stream(after=0)
    sent, reply = run_turn(chat, "count me")
    evs = sse.until(finished(sent["reply"]["id"]))
    sse.close()
    assert reply["status"] == "completed", reply
    reported = recorded_usage(model)
    main = reported[reply["model"]] if reply["model"] in reported else None
    assert main is not None, (reported, reply["model"])
    for k in TOKENS:  # the two main-loop replies are in there
        assert main[k] >= u1[k] + u2[k]

    ledger = srv.db.query(
        "SELECT model, input_tokens, output_tokens,"
        " cache_creation_input_tokens, cache_read_input_tokens, cost_usd"
        " FROM usage_ledger WHERE message_id = %s", (sent["reply"]["id"],))
    by_model = {r[0]: dict(zip(TOKENS + ("cost_usd",), r[1:]))
                for r in ledger}
    assert set(by_model) == set(reported), (by_model, reported)
    total_cost = Decimal(0)
    for m, row in by_model.items():
        for k in TOKENS:
            assert row[k] == reported[m][k], (m, k, row, reported[m])
        assert row["cost_usd"] == expected_cost(srv, m, reported[m])
        total_cost += row["cost_usd"]
    assert total_cost > 0

    # The reply carries the same rows and their sum.
    assert {u["model"] for u in reply["usage"]} == set(by_model)
    for u in reply["usage"]:
        for k in TOKENS:
            assert u[k] == by_model[u["model"]][k]
        assert Decimal(str(u["cost_usd"])) == by_model[u["model"]]["cost_usd"]
    assert Decimal(str(reply["cost_usd"])) == total_cost

    # One usage event per model, before the final status.
    usage_evs = [e for e in evs if e["event"] == "usage"]
    assert {e["data"]["model"] for e in usage_evs} == set(by_model)
    for e in usage_evs:
        assert e["data"]["message_id"] == sent["reply"]["id"]
        assert Decimal(str(e["data"]["cost_usd"])) == \
            by_model[e["data"]["model"]]["cost_usd"]
        assert "id" in e  # durable


def test_price_change_applies_to_later_turns(srv, model, user, admin):
    u = {"input_tokens": 1000000, "output_tokens": 0,
         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    model.scenario([{"match": {"user_text_contains": "price me"},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}],
                               "usage": u, "model": "claude-haiku-4-5"}}])
    chat = Chat(srv, user, model="claude-haiku-4-5")
    _, first = run_turn(chat, "price me")
    haiku = [x for x in first["usage"] if x["model"] == "claude-haiku-4-5"]
    assert haiku and Decimal(str(haiku[0]["cost_usd"])) == Decimal("1")
    srv.db.query("UPDATE models SET price_input = 2 "
                 "WHERE id = 'claude-haiku-4-5'")
    try:
        _, second = run_turn(chat, "price me")
        haiku = [x for x in second["usage"]
                 if x["model"] == "claude-haiku-4-5"]
        assert Decimal(str(haiku[0]["cost_usd"])) == Decimal("2")
        # The first reply keeps what it cost when it ended.
        again = chat.message(first["id"])
        assert Decimal(str(again["cost_usd"])) == \
            Decimal(str(first["cost_usd"]))
    finally:
        srv.db.query("UPDATE models SET price_input = 1 "
                     "WHERE id = 'claude-haiku-4-5'")


def set_cap(srv, user, usd):
    srv.db.query("UPDATE users SET monthly_budget_cap_usd = %s "
                 "WHERE id = %s", (usd, user.id))


def test_budget_crossed_mid_turn_stops_the_run(srv, model, user):
    # The first reply alone costs 0.03 USD (10k input tokens at 3/MTok);
    # the cap is 0.01, so the gateway refuses the call after the tool.
    big = {"input_tokens": 10000, "output_tokens": 10,
           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    model.scenario(bash_then_done("spend it", "echo x > spent.txt", big,
                                  {"input_tokens": 5, "output_tokens": 5}))
    set_cap(srv, user, "0.01")
    chat = Chat(srv, user, permission_mode="auto",
                model="claude-sonnet-4-5")
    sent, reply = run_turn(chat, "spend it")
    assert reply["status"] == "failed", reply
    assert reply["error"]["code"] == "budget_exceeded", reply
    # The refused call never reached the model: only the first answer
    # of the main loop was made.
    main = [r for r in model.requests()
            if r.get("kind") == "messages" and not r.get("side_call")]
    assert len(main) == 1, [r.get("last_user_text") for r in main]
    # What was spent is charged all the same.
    spent = srv.db.scalar("SELECT sum(cost_usd) FROM usage_ledger "
                          "WHERE user_id = %s", (user.id,))
    assert spent >= Decimal("0.03")
    # Over budget now: new messages are refused before anything is stored.
    before = srv.db.scalar("SELECT count(*) FROM messages WHERE chat_id = %s",
                           (chat.id,))
    r = srv.post(f"/chats/{chat.id}/messages", json={"content": "more"},
                 token=user.access)
    assert_problem(r, 402, "budget_exceeded")
    assert srv.db.scalar("SELECT count(*) FROM messages WHERE chat_id = %s",
                         (chat.id,)) == before


def test_user_budget_below_cap_applies(srv, model, user):
    model.scenario([{"match": {"user_text_contains": "cheap"},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}],
                               "usage": {"input_tokens": 2000,
                                         "output_tokens": 0}}}])
    set_cap(srv, user, "100")
    r = srv.request("PUT", "/settings", json={"monthly_budget_usd": 0.001},
                    token=user.access)
    assert r.status_code == 200, r.text
    chat = Chat(srv, user, model="claude-sonnet-4-5")
    _, reply = run_turn(chat, "cheap")  # 0.006 USD: allowed to start
    assert reply["status"] == "completed", reply
    assert_problem(srv.post(f"/chats/{chat.id}/messages",
                            json={"content": "cheap"}, token=user.access),
                   402, "budget_exceeded")
    r = srv.request("PUT", "/settings", json={"monthly_budget_usd": None},
                    token=user.access)
    assert r.status_code == 200, r.text
    _, reply = run_turn(chat, "cheap")
    assert reply["status"] == "completed", reply


def test_settings_env_reaches_the_sandbox_and_nothing_else(srv, model,
                                                            user):
    secret = "s3cr3t-" + os.urandom(8).hex()
    r = srv.request("PUT", "/settings",
                    json={"env": {"PROJECT_TOKEN": secret}},
                    token=user.access)
    assert r.status_code == 200, r.text
    assert secret not in r.text
    model.scenario(bash_then_done("show env",
                                  "printenv PROJECT_TOKEN > env.txt", {}, {}))
    chat = Chat(srv, user, permission_mode="auto")
    sse = chat.stream(after=0)
    sent, reply = run_turn(chat, "show env")
    evs = sse.until(finished(sent["reply"]["id"]))
    sse.close()
    assert reply["status"] == "completed", reply
    with open(os.path.join(chat.workspace(), "env.txt")) as f:
        assert f.read().strip() == secret
    # Only the sandbox saw it: not the API, the events, the log, the
    # stored settings.
    assert secret not in srv.get("/settings", token=user.access).text
    assert secret not in json.dumps([e.get("data") for e in evs])
    assert secret not in srv.log_text()
    stored = srv.db.scalar("SELECT env_enc::text FROM user_settings "
                           "WHERE user_id = %s", (user.id,))
    assert "PROJECT_TOKEN" in stored and secret not in stored

    # A changed value is a changed launch setting: the next turn runs a
    # new CLI (resumed) that has it.
    newer = secret + "-2"
    r = srv.request("PUT", "/settings", json={"env": {"PROJECT_TOKEN": newer}},
                    token=user.access)
    assert r.status_code == 200, r.text
    _, reply = run_turn(chat, "show env")
    assert reply["status"] == "completed", reply
    with open(os.path.join(chat.workspace(), "env.txt")) as f:
        assert f.read().strip() == newer


def tools_offered(model):
    main = [r for r in model.requests()
            if r.get("kind") == "messages" and not r.get("side_call")]
    return {t["name"] for t in main[-1]["body"].get("tools", [])}


def test_disallowed_tools_are_not_offered(srv, model, user):
    model.scenario([{"match": {"user_text_contains": "which tools"},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    chat = Chat(srv, user)
    _, reply = run_turn(chat, "which tools")
    assert reply["status"] == "completed"
    offered = tools_offered(model)
    assert "Bash" in offered and "CronCreate" not in offered
    r = srv.request("PUT", "/settings",
                    json={"disallowed_tools": ["Bash", "WebFetch"],
                          "allow_background_tools": True},
                    token=user.access)
    assert r.status_code == 200, r.text
    _, reply = run_turn(chat, "which tools")
    assert reply["status"] == "completed"
    offered = tools_offered(model)
    assert "Bash" not in offered and "WebFetch" not in offered
    assert "Read" in offered


def test_allowed_tools_decide_as_rules(srv, model, user):
    r = srv.request("PUT", "/settings",
                    json={"allowed_tools": ["Bash(echo allowed:*)"]},
                    token=user.access)
    assert r.status_code == 200, r.text
    model.scenario(bash_then_done("by rule", "echo allowed > ruled.txt",
                                  {}, {}))
    chat = Chat(srv, user, permission_mode="ask")
    sse = chat.stream(after=0)
    sent, reply = run_turn(chat, "by rule")
    evs = sse.until(finished(sent["reply"]["id"]))
    sse.close()
    assert reply["status"] == "completed", reply
    assert os.path.exists(os.path.join(chat.workspace(), "ruled.txt"))
    resolved = [e["data"] for e in evs if e["event"] == "permission_resolved"]
    assert resolved and resolved[0]["reason"] == "rule"
    assert resolved[0]["decision"] == "allow" and resolved[0]["by"] is None
    assert "permission_request" not in [e["event"] for e in evs]
    listed = srv.get(f"/chats/{chat.id}/permissions",
                     token=user.access).json()["items"]
    assert [(p["tool_name"], p["reason"]) for p in listed] == \
        [("Bash", "rule")]


def test_settings_prompt_is_appended_before_the_chats(srv, model, user):
    r = srv.request("PUT", "/settings",
                    json={"system_prompt_append": "USER-LEVEL-RULE-42"},
                    token=user.access)
    assert r.status_code == 200, r.text
    model.scenario([{"match": {"system_contains": ["USER-LEVEL-RULE-42",
                                                   "CHAT-LEVEL-RULE-7"]},
                     "reply": {"blocks": [{"type": "text",
                                           "text": "both prompts"}]}}])
    chat = Chat(srv, user, system_prompt_append="CHAT-LEVEL-RULE-7")
    _, reply = run_turn(chat, "hello")
    assert reply["content"][0]["text"] == "both prompts", reply


MCP_SERVER = r'''
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"],
                  "capabilities": {"tools": {}},
                  "serverInfo": {"name": "pinger", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "ping", "description": "answers pong",
                             "inputSchema": {"type": "object",
                                             "properties": {}}}]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "pong"}]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}),
          flush=True)
'''


def test_mcp_servers_reach_the_cli(srv, model, user):
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    chat = Chat(srv, user)
    _, reply = run_turn(chat, "first")  # creates the workspace
    assert reply["status"] == "completed", reply
    path = os.path.join(chat.workspace(), "mcp_pinger.py")
    with open(path, "w") as f:
        f.write(MCP_SERVER)
    os.chmod(path, 0o644)
    r = srv.request("PUT", "/settings", json={"mcp_servers": {"pinger": {
        "command": "/usr/bin/python3",
        "args": ["/workspace/mcp_pinger.py"]}}}, token=user.access)
    assert r.status_code == 200, r.text
    sse = chat.stream(after=0)
    sent, reply = run_turn(chat, "second")
    evs = sse.until(finished(sent["reply"]["id"]))
    sse.close()
    inits = [e["data"]["data"] for e in evs if e["event"] == "system"
             and e["data"]["subtype"] == "init"
             and e["data"]["message_id"] == sent["reply"]["id"]]
    assert inits, [e["event"] for e in evs]
    # The CLI started the server in the sandbox and lists its tool (it
    # may defer MCP tools from the model request itself).
    servers = {m["name"]: m["status"] for m in inits[-1]["mcp_servers"]}
    assert servers == {"pinger": "connected"}, inits[-1]
    assert "mcp__pinger__ping" in inits[-1]["tools"]
    assert reply["status"] == "completed", reply


def test_ask_user_question_gets_the_users_answers(srv, model, user):
    question = {"question": "Which color should the button be?",
                "header": "Color", "multiSelect": False,
                "options": [{"label": "red", "description": "warm"},
                            {"label": "blue", "description": "calm"}]}
    model.scenario([
        {"match": {"user_text_contains": "ask me"},
         "reply": {"blocks": [{"type": "tool_use", "name": "AskUserQuestion",
                               "input": {"questions": [question]}}]}},
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "noted"}]}},
    ])
    chat = Chat(srv, user, permission_mode="ask")
    sse = chat.stream(after=0)
    sent = chat.send("ask me")
    ev = sse.until(lambda e: e["event"] == "permission_request")[-1]
    req = ev["data"]["request"]
    assert req["tool_name"] == "AskUserQuestion"
    metrics = srv.get("/metrics", api=False).text
    assert 'corral_runs{phase="awaiting_permission"} 1' in metrics, metrics
    r = srv.post(f"/chats/{chat.id}/permissions/{req['id']}",
                 json={"decision": "allow", "answers": {
                     question["question"]: "blue"}}, token=user.access)
    assert r.status_code == 200, r.text
    sse.until(finished(sent["reply"]["id"]))
    sse.close()
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["status"] == "completed", reply
    results = [r for r in model.requests() if r.get("kind") == "messages"
               and r.get("last_block_type") == "tool_result"]
    block = results[-1]["body"]["messages"][-1]["content"][0]
    text = block["content"] if isinstance(block["content"], str) \
        else json.dumps(block["content"])
    assert question["question"] + '"="blue"' in text, text


def test_a_model_without_a_price_is_not_run(srv, model, user, admin):
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "free"}]}}])
    before = len(model.requests())
    chat = Chat(srv, user, model="claude-unpriced-9")
    _, reply = run_turn(chat, "hello")
    assert reply["status"] == "failed", reply
    assert reply["error"]["code"] == "model_error"
    assert "GET /models" in reply["error"]["detail"]
    assert len(model.requests()) == before  # nothing reached the model
    # Once an admin prices it, it runs and is charged.
    r = srv.request("PUT", "/admin/models/claude-unpriced-9", json={
        "price_per_mtok": {"input": 1, "output": 1, "cache_write": 1,
                           "cache_read": 1}}, token=admin.access)
    assert r.status_code == 200, r.text
    _, reply = run_turn(chat, "hello")
    assert reply["status"] == "completed", reply
    assert Decimal(str(reply["cost_usd"])) > 0
