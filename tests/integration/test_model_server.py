"""The scripted model server (tools/model_server.py), alone and with the
real Claude Code CLI.

The first half talks HTTP to the server directly: SSE framing, the message
shapes, errors, matching, recording. The second half runs the real CLI
(`CORRAL_CLI_PATH`, required: a missing CLI is a failure, never a skip)
against the server in stream-json mode, the way corral drives it: a
streamed text reply, thinking, a Bash tool call allowed through
`can_use_tool`, history across turns and across `--resume`, API errors,
and an interrupt.

Run: /usr/bin/python3 -m pytest -q tests/integration/test_model_server.py

When run as root the CLI runs as CORRAL_TEST_SERVICE_USER, or else as the
system user `cliuser` (created if missing): the CLI refuses some modes as
root, and corral never runs it as root.
"""

import hashlib
import http.client
import json
import os
import pwd
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SERVER = os.path.join(ROOT, "tools", "model_server.py")
DEFAULT_SCENARIO = os.path.join(ROOT, "tools", "scenarios", "default.json")
PYTHON = "/usr/bin/python3"
MODEL = "claude-sonnet-4-5"
PLACEHOLDER_KEY = "placeholder"

# One bound for every wait on the CLI: generous, but a hang fails the test.
TURN_TIMEOUT = 40


# ------------------------------------------------------------------ server

class ModelServer:
    def __init__(self, scenario_path, workdir):
        self.log_path = os.path.join(workdir, "model_server.log")
        self.err = open(os.path.join(workdir, "model_server.stderr"), "w+b")
        self.proc = subprocess.Popen(
            [PYTHON, SERVER, "--port", "0", "--scenario", scenario_path,
             "--log", self.log_path],
            stdout=subprocess.PIPE, stderr=self.err)
        line = self._first_line(15)
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert m, f"unexpected first line {line!r}: {self.stderr()}"
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def _first_line(self, timeout):
        out = []
        t = threading.Thread(target=lambda: out.append(
            self.proc.stdout.readline().decode()), daemon=True)
        t.start()
        t.join(timeout)
        if not out:
            self.proc.kill()
            raise AssertionError("model server did not start: " + self.stderr())
        return out[0]

    def stderr(self):
        if self.err.closed:
            return self.final_stderr
        self.err.flush()
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def request(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        try:
            data = None
            hdrs = dict(headers or {})
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            raw = r.read()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), raw
        finally:
            conn.close()

    def scenario(self, scenario):
        status, _, raw = self.request("POST", "/_scripted/scenario", scenario)
        assert status == 200, raw
        self.reset()

    def reset(self):
        status, _, raw = self.request("POST", "/_scripted/reset", b"")
        assert status == 200, raw

    def requests(self):
        status, _, raw = self.request("GET", "/_scripted/requests")
        assert status == 200
        return json.loads(raw)

    def message_requests(self):
        return [r for r in self.requests() if r["kind"] == "messages"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.final_stderr = self.stderr()
        self.err.close()


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="corral-ms-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def server(workdir):
    path = os.path.join(workdir, "empty.json")
    with open(path, "w") as f:
        json.dump([], f)
    srv = ModelServer(path, workdir)
    yield srv
    srv.stop()
    assert srv.proc.returncode == 0, srv.stderr()
    assert "Traceback" not in srv.stderr(), srv.stderr()


@pytest.fixture
def ms(server):
    """The shared server with an empty scenario and no recorded requests."""
    server.scenario([])
    yield server


def msg_body(text=None, stream=True, tools=True, messages=None, **extra):
    body = {"model": MODEL, "max_tokens": 1024, "stream": stream,
            "messages": messages or [{"role": "user", "content": text}]}
    if tools:
        body["tools"] = [{"name": "Bash", "description": "run a command",
                          "input_schema": {"type": "object"}}]
    body.update(extra)
    return body


def parse_sse(raw):
    """[(event, data)] of an SSE body, checking the framing byte by byte."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = []
    for frame in text[:-2].split("\n\n"):
        lines = frame.split("\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        etype = lines[0][len("event: "):]
        data = json.loads(lines[1][len("data: "):])
        assert data["type"] == etype
        # Compact JSON, as the API sends it.
        assert lines[1][len("data: "):] == json.dumps(
            data, separators=(",", ":"), ensure_ascii=False)
        events.append((etype, data))
    return events


# ------------------------------------------------------- server on its own

def test_port_zero_prints_listening_line_and_serves(server):
    assert 1024 <= server.port < 65536
    status, headers, raw = server.request("GET", "/")
    assert status == 200 and headers["content-type"] == "application/json"


def test_streaming_text_reply_is_exact_sse(ms):
    ms.scenario([{"match": {"user_text_contains": "hi"}, "reply": {
        "blocks": [{"type": "text", "text": "Hello there, streamed."}],
        "chunk_size": 5,
        "usage": {"input_tokens": 11, "output_tokens": 7,
                  "cache_read_input_tokens": 3,
                  "cache_creation_input_tokens": 2}}}])
    status, headers, raw = ms.request("POST", "/v1/messages?beta=true",
                                      msg_body("hi"))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers.get("transfer-encoding") == "chunked"
    ev = parse_sse(raw)
    types = [t for t, _ in ev]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types[1] == "ping"
    msg = ev[0][1]["message"]
    assert re.fullmatch(r"msg_[0-9a-f]{24}", msg["id"])
    assert msg["role"] == "assistant" and msg["model"] == MODEL
    assert msg["content"] == [] and msg["stop_reason"] is None
    assert msg["usage"]["input_tokens"] == 11
    assert msg["usage"]["cache_read_input_tokens"] == 3
    assert msg["usage"]["cache_creation_input_tokens"] == 2
    deltas = [d["delta"]["text"] for t, d in ev if t == "content_block_delta"]
    assert deltas == ["Hello", " ther", "e, st", "reame", "d."]
    assert types.count("content_block_start") == types.count("content_block_stop") == 1
    md = ev[-2][1]
    assert md["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert md["usage"]["output_tokens"] == 7 and md["usage"]["input_tokens"] == 11


def test_thinking_and_tool_use_stream(ms):
    ms.scenario([{"match": {"any": True}, "reply": {"blocks": [
        {"type": "thinking", "thinking": "Pondering the request."},
        {"type": "text", "text": "Running it."},
        {"type": "tool_use", "name": "Bash",
         "input": {"command": "echo hi > f.txt", "description": "make f"}},
        {"type": "tool_use", "name": "Read", "input": {"file_path": "{{cwd}}/f.txt"}},
    ], "chunk_size": 7}}])
    body = msg_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\n - Primary working directory: /ws/x\n</system-reminder>"},
        {"type": "text", "text": "go"}]}])
    status, _, raw = ms.request("POST", "/v1/messages", body)
    assert status == 200
    ev = parse_sse(raw)
    by_index = {}
    for t, d in ev:
        if t.startswith("content_block"):
            by_index.setdefault(d["index"], []).append(d)
    assert sorted(by_index) == [0, 1, 2, 3]
    think = by_index[0]
    assert think[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    kinds = [d["delta"]["type"] for d in think[1:-1]]
    assert kinds[-1] == "signature_delta" and set(kinds[:-1]) == {"thinking_delta"}
    assert "".join(d["delta"]["thinking"] for d in think[1:-2]) == "Pondering the request."
    assert think[-2]["delta"]["signature"]
    assert think[-1]["type"] == "content_block_stop"
    tool_ids = []
    for idx, want in ((2, {"command": "echo hi > f.txt", "description": "make f"}),
                      (3, {"file_path": "/ws/x/f.txt"})):
        blk = by_index[idx]
        cb = blk[0]["content_block"]
        assert cb["type"] == "tool_use" and cb["input"] == {}
        assert re.fullmatch(r"toolu_[0-9a-f]{24}", cb["id"])
        tool_ids.append(cb["id"])
        parts = [d["delta"]["partial_json"] for d in blk[1:-1]]
        assert all(d["delta"]["type"] == "input_json_delta" for d in blk[1:-1])
        assert len(parts) > 2
        assert json.loads("".join(parts)) == want
    assert len(set(tool_ids)) == 2
    assert ev[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_non_streaming_keep_alive_and_unique_ids(ms):
    ms.scenario([{"match": {"any": True}, "reply": {"blocks": [
        {"type": "text", "text": "one"},
        {"type": "tool_use", "name": "Write", "input": {"file_path": "/w/a", "content": "x"}}]}}])
    conn = http.client.HTTPConnection("127.0.0.1", ms.port, timeout=10)
    seen = set()
    try:
        for _ in range(3):   # one connection: keep-alive with Content-Length
            conn.request("POST", "/v1/messages?beta=true",
                         body=json.dumps(msg_body("x", stream=False)),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            raw = r.read()
            assert r.status == 200
            assert int(r.getheader("Content-Length")) == len(raw)
            m = json.loads(raw)
            assert m["type"] == "message" and m["stop_reason"] == "tool_use"
            assert m["content"][0] == {"type": "text", "text": "one"}
            assert m["content"][1]["input"] == {"file_path": "/w/a", "content": "x"}
            assert m["usage"]["output_tokens"] >= 1 and m["usage"]["input_tokens"] >= 1
            seen.add(m["id"])
            seen.add(m["content"][1]["id"])
        # A streamed reply on the same connection: chunked, still reusable.
        conn.request("POST", "/v1/messages", body=json.dumps(msg_body("x")),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        ev = parse_sse(r.read())
        seen.add(ev[0][1]["message"]["id"])
        conn.request("GET", "/v1/models")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["data"]
    finally:
        conn.close()
    assert len(seen) == 7


def test_count_tokens_and_unknown_paths(ms):
    status, _, raw = ms.request("POST", "/v1/messages/count_tokens?beta=true",
                                msg_body("count me", stream=None))
    assert status == 200
    body = json.loads(raw)
    assert list(body) == ["input_tokens"] and body["input_tokens"] > 0
    status, headers, raw = ms.request("GET", "/v1/nothing/here")
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(raw) == {"type": "error", "error": {
        "type": "not_found_error", "message": "Not found: GET /v1/nothing/here"}}
    status, _, raw = ms.request("POST", "/v1/messages", b"{not json")
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("status,etype", [
    (429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")])
def test_error_replies(ms, status, etype):
    ms.scenario([{"match": {"any": True}, "reply": {
        "error": {"status": status, "message": f"scripted {status}"}}}])
    got, headers, raw = ms.request("POST", "/v1/messages?beta=true", msg_body("x"))
    assert got == status
    assert json.loads(raw) == {"type": "error", "error": {
        "type": etype, "message": f"scripted {status}"}}
    assert ("retry-after" in headers) == (status == 429)


def test_mid_stream_error_and_drop(ms):
    ms.scenario([
        {"match": {"user_text_contains": "err"}, "reply": {
            "blocks": [{"type": "text", "text": "partial"}],
            "stream_error": {"type": "overloaded_error", "message": "busy"}}},
        {"match": {"user_text_contains": "drop"}, "reply": {
            "blocks": [{"type": "text", "text": "partial"}],
            "drop_after_events": 3}}])
    _, _, raw = ms.request("POST", "/v1/messages", msg_body("err"))
    ev = parse_sse(raw)
    assert ev[-1] == ("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "busy"}})
    assert "message_stop" not in [t for t, _ in ev]
    with pytest.raises(http.client.IncompleteRead):
        ms.request("POST", "/v1/messages", msg_body("drop"))


def test_matching_uses_last_block_of_last_user_message(ms):
    ms.scenario([
        {"name": "result", "match": {"tool_result_contains": "exit 0"},
         "reply": {"blocks": [{"type": "text", "text": "saw result"}]}},
        {"name": "prompt", "match": {"user_text_regex": "^second"},
         "reply": {"blocks": [{"type": "text", "text": "saw second"}]}},
        {"name": "first", "match": {"user_text_contains": "first"},
         "reply": {"blocks": [{"type": "text", "text": "saw first"}]}},
    ])
    history = [
        {"role": "user", "content": "first prompt"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]},
    ]
    # A rejected tool result merged with the next prompt: the prompt decides.
    merged = history + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
         "content": "exit 0 (rejected)"},
        {"type": "text", "text": "second prompt"},
        {"type": "text", "text": "<system-reminder>\nnoise</system-reminder>"}]}]
    # A plain tool result: the result decides, reminders stripped.
    plain = history + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1",
         "content": [{"type": "text", "text": "exit 0\n\n<system-reminder>first</system-reminder>"}]}]}]
    for messages, want in ((merged, "saw second"), (plain, "saw result"),
                           (history[:1], "saw first")):
        _, _, raw = ms.request("POST", "/v1/messages",
                               msg_body(stream=False, messages=messages))
        assert json.loads(raw)["content"][0]["text"] == want
    recs = ms.message_requests()
    assert [r["rule"] for r in recs] == ["prompt", "result", "first"]
    assert [r["last_block_type"] for r in recs] == ["text", "tool_result", "text"]
    assert [r["turn"] for r in recs] == [1, 2, 3]


def test_times_turn_system_model_and_side_calls(ms):
    ms.scenario({"rules": [
        {"name": "once", "times": 1, "match": {"any": True},
         "reply": {"blocks": [{"type": "text", "text": "only once"}]}},
        {"name": "third", "match": {"turn": 3},
         "reply": {"blocks": [{"type": "text", "text": "third request"}]}},
        {"name": "sys", "match": {"system_contains": "MARKER-42", "model": "haiku"},
         "reply": {"blocks": [{"type": "text", "text": "system seen"}]}},
        {"name": "echo", "match": {"user_text_contains": "echo"},
         "reply": {"echo": True}},
    ], "fallback": {"blocks": [{"type": "text", "text": "fallback"}]}})

    def ask(**kw):
        _, _, raw = ms.request("POST", "/v1/messages", msg_body(stream=False, **kw))
        return json.loads(raw)["content"][-1]["text"]

    # Side calls (no tools, one-token probes, compaction) never take rules
    # written for the main loop, nor count as turns.
    assert ask(text="hello", tools=False) == "Scripted reply."
    assert ask(text="quota", max_tokens=1) == "ok"
    compact = ask(text="CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.\n...")
    assert "<summary>" in compact and "</summary>" in compact
    title = ask(text="t", tools=False, output_format={"type": "json_schema", "schema": {
        "type": "object", "properties": {"title": {"type": "string"}}}})
    assert json.loads(title) == {"title": "Scripted reply"}
    assert ask(text="a") == "only once"                       # turn 1
    assert ask(text="b") == "fallback"                        # turn 2
    assert ask(text="c") == "third request"                   # turn 3
    assert ask(text="d", system="x MARKER-42 y") == "fallback"  # model differs
    assert ask(text="d", model="claude-haiku-4-5",
               system=[{"type": "text", "text": "x MARKER-42 y"}]) == "system seen"
    echo = ask(messages=[
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>r</system-reminder>"},
                                     {"type": "text", "text": "one"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "reply one"}]},
        {"role": "user", "content": "echo two"}])
    assert echo.startswith("ECHO ")
    summary = json.loads(echo[len("ECHO "):])
    assert summary["user_texts"] == ["one", "echo two"]
    assert summary["assistant_texts"] == ["reply one"]
    recs = ms.message_requests()
    assert [r["side_kind"] for r in recs[:4]] == ["helper", "probe", "compact", "helper"]
    assert [r["turn"] for r in recs[:5]] == [None, None, None, None, 1]
    # A rule can claim side calls explicitly.
    ms.scenario([{"match": {"side_kind": "compact"}, "reply": {
        "blocks": [{"type": "text", "text": "<summary>mine</summary>"}]}}])
    assert ask(text="Your task is to create a detailed summary of the conversation") \
        == "<summary>mine</summary>"


def test_recording_hides_credentials(ms):
    ms.request("POST", "/v1/messages?beta=true", msg_body("x", stream=False),
               headers={"x-api-key": "sk-secret-value", "anthropic-version": "2023-06-01"})
    ms.request("POST", "/v1/messages", msg_body("y", stream=False),
               headers={"Authorization": "Bearer tok-123"})
    a, b = ms.requests()
    assert a["path"] == "/v1/messages" and a["query"] == "beta=true"
    assert a["headers"]["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in a["headers"] and "authorization" not in b["headers"]
    assert a["auth"]["x-api-key"] == {"present": True, "sha256_prefix":
                                      hashlib.sha256(b"sk-secret-value").hexdigest()[:16]}
    assert a["auth"]["authorization"] == {"present": False}
    assert b["auth"]["x-api-key"] == {"present": False}
    auth = b["auth"]["authorization"]
    assert auth["sha256_prefix"] == hashlib.sha256(b"Bearer tok-123").hexdigest()[:16]
    assert auth["credential_sha256_prefix"] == hashlib.sha256(b"tok-123").hexdigest()[:16]
    assert a["body"]["messages"][0]["content"] == "x"
    dump = json.dumps(ms.requests())
    assert "sk-secret-value" not in dump and "tok-123" not in dump
    ms.reset()
    assert ms.requests() == []


def test_bad_scenarios_are_refused(ms):
    for bad in ({"rules": "x"}, [{"match": {"bogus": 1}, "reply": {"echo": True}}],
                [{"reply": {"blocks": [{"type": "image"}]}}],
                [{"reply": {"error": {"status": 200}}}],
                [{"match": {"user_text_regex": "("}, "reply": {"echo": True}}]):
        status, _, raw = ms.request("POST", "/_scripted/scenario", bad)
        assert status == 400, bad
        assert json.loads(raw)["error"]["message"].startswith("bad scenario")


def test_default_scenario_loads_and_answers(ms):
    with open(DEFAULT_SCENARIO) as f:
        ms.scenario(json.load(f))
    _, _, raw = ms.request("POST", "/v1/messages", msg_body(
        "Please write hello.txt", stream=False))
    m = json.loads(raw)
    assert m["stop_reason"] == "tool_use"
    assert m["content"][-1]["name"] == "Bash"
    assert "hello.txt" in m["content"][-1]["input"]["command"]
    _, _, raw = ms.request("POST", "/v1/messages", msg_body("what is 2+2?", stream=False))
    assert "offline demo model" in json.loads(raw)["content"][0]["text"]


# -------------------------------------------------------- the real CLI

def cli_path():
    path = os.environ.get("CORRAL_CLI_PATH")
    if not path:
        pytest.fail("CORRAL_CLI_PATH is not set: it names the claude CLI "
                    "binary (tools/lib.sh installs it under var/cli)", pytrace=False)
    if not os.access(path, os.X_OK):
        pytest.fail(f"CORRAL_CLI_PATH={path} is not executable", pytrace=False)
    return path


def find_runuser():
    for p in (shutil.which("runuser"), "/usr/sbin/runuser", "/sbin/runuser"):
        if p and os.access(p, os.X_OK):
            return p
    pytest.fail("runuser not found (util-linux)", pytrace=False)


@pytest.fixture(scope="module")
def cli_user():
    """None when not root; else the unprivileged user the CLI runs as."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("CORRAL_TEST_SERVICE_USER") or "cliuser"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--create-home",
                        name], check=True, timeout=30)
    return pwd.getpwnam(name)


@pytest.fixture(scope="module")
def cli(cli_user):
    path = cli_path()
    argv = [path, "--version"]
    if cli_user is not None:
        argv = [find_runuser(), "-u", cli_user.pw_name, "--"] + argv
    r = subprocess.run(argv, capture_output=True, timeout=60)
    assert r.returncode == 0, (
        f"{' '.join(argv)} failed (is the CLI readable by "
        f"{cli_user.pw_name if cli_user else 'this user'}?): {r.stderr[-2000:]!r}")
    return path


class CliHome:
    """A private HOME and workspace for one conversation, owned by the CLI
    user, so a later process can --resume it."""

    def __init__(self, user):
        self.base = tempfile.mkdtemp(prefix="corral-ms-cli-", dir="/tmp")
        self.home = os.path.join(self.base, "home")
        self.workspace = os.path.join(self.base, "workspace")
        # The CLI's scratch (claude-<uid>/: Bash output, an fswatch probe
        # directory per process it never removes) goes under TMPDIR.
        self.tmp = os.path.join(self.base, "tmp")
        for d in (self.home, self.workspace, self.tmp):
            os.mkdir(d)
        if user is not None:
            for d in (self.base, self.home, self.workspace, self.tmp):
                os.chown(d, user.pw_uid, user.pw_gid)

    def cleanup(self):
        shutil.rmtree(self.base, ignore_errors=True)


class Cli:
    """One CLI process in stream-json mode, read line by line by a thread."""

    def __init__(self, path, user, home, server_url, session, resume=False,
                 extra_args=()):
        argv = [path, "-p", "--output-format", "stream-json", "--verbose",
                "--input-format", "stream-json", "--include-partial-messages",
                "--model", MODEL, "--permission-mode", "default",
                "--permission-prompt-tool", "stdio",
                (f"--resume={session}" if resume else f"--session-id={session}")]
        argv += list(extra_args)
        if user is not None:
            # runuser resets HOME to the user's passwd entry; the CLI must
            # keep its session files in the private home to --resume.
            argv = [find_runuser(), "-u", user.pw_name, "--", "/usr/bin/env",
                    f"HOME={home.home}"] + argv
        env = {
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb",
            "HOME": home.home, "TMPDIR": home.tmp,
            "ANTHROPIC_BASE_URL": server_url,
            "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        self.stderr_file = tempfile.TemporaryFile()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr_file, cwd=home.workspace, env=env,
            start_new_session=True)
        self.lines = []          # every parsed stdout line, for diagnostics
        self.q = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.req_n = 0

    def _read(self):
        for raw in self.proc.stdout:
            raw = raw.strip()
            if not raw.startswith(b"{"):
                continue
            obj = json.loads(raw)
            obj["_t"] = time.monotonic() - self.t0
            self.q.put(obj)
        self.q.put(None)

    def send(self, obj):
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def next(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for the CLI; last lines:\n"
                                 + self.tail())
        try:
            obj = self.q.get(timeout=left)
        except queue.Empty:
            raise AssertionError("timed out waiting for the CLI; last lines:\n"
                                 + self.tail()) from None
        if obj is None:
            raise AssertionError("CLI stdout closed; stderr:\n" + self.stderr()
                                 + "\nlast lines:\n" + self.tail())
        self.lines.append(obj)
        return obj

    def control(self, subtype, **fields):
        self.req_n += 1
        rid = f"req_{self.req_n}_{uuid.uuid4().hex[:8]}"
        self.send({"type": "control_request", "request_id": rid,
                   "request": dict(subtype=subtype, **fields)})
        return rid

    def initialize(self, timeout=60):
        rid = self.control("initialize", hooks=None)
        deadline = time.monotonic() + timeout
        while True:
            o = self.next(deadline)
            if o["type"] == "control_response" and \
                    o["response"].get("request_id") == rid:
                assert o["response"]["subtype"] == "success", o
                return o

    def user(self, text):
        mid = str(uuid.uuid4())
        self.send({"type": "user", "message": {"role": "user", "content": text},
                   "parent_tool_use_id": None, "session_id": "", "uuid": mid})
        return mid

    def turn(self, text, on_permission=None, timeout=TURN_TIMEOUT, on_line=None):
        """Write a user message; return every line up to its result.
        can_use_tool requests are answered by on_permission (default: allow
        with the input unchanged)."""
        mid = self.user(text)
        return self.collect(timeout, on_permission, on_line), mid

    def collect(self, timeout=TURN_TIMEOUT, on_permission=None, on_line=None):
        deadline = time.monotonic() + timeout
        out = []
        while True:
            o = self.next(deadline)
            out.append(o)
            if on_line is not None:
                on_line(o)
            if o["type"] == "control_request" and \
                    o["request"]["subtype"] == "can_use_tool":
                answer = (on_permission or allow)(o["request"])
                self.send({"type": "control_response", "response": {
                    "subtype": "success", "request_id": o["request_id"],
                    "response": answer}})
            if o["type"] == "result":
                return out

    def close(self, timeout=15):
        """Close stdin and wait; kill the process group if it lingers."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        self.reader.join(5)
        return self.proc.returncode

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def stderr(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode(errors="replace")[-4000:]

    def tail(self, n=15):
        return "\n".join(json.dumps({k: v for k, v in o.items()
                                     if k != "_t"})[:400]
                         for o in self.lines[-n:])


def allow(request):
    return {"behavior": "allow", "updatedInput": request["input"]}


@pytest.fixture
def cli_run(cli, cli_user, ms):
    """Factory: start a CLI against the shared server; all are cleaned up."""
    started, homes = [], []

    def start(home=None, session=None, resume=False, extra_args=()):
        if home is None:
            home = CliHome(cli_user)
            homes.append(home)
        c = Cli(cli, cli_user, home, ms.url, session or str(uuid.uuid4()),
                resume=resume, extra_args=extra_args)
        c.home = home
        started.append(c)
        c.initialize()
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.close(timeout=5)
        c.kill()
        c.stderr_file.close()
    for h in homes:
        h.cleanup()


def of_type(lines, t, subtype=None):
    return [o for o in lines if o["type"] == t and
            (subtype is None or o.get("subtype") == subtype)]


def stream_deltas(lines, delta_type):
    return [o["event"]["delta"] for o in of_type(lines, "stream_event")
            if o["event"]["type"] == "content_block_delta"
            and o["event"]["delta"]["type"] == delta_type]


def the_result(lines):
    results = of_type(lines, "result")
    assert len(results) == 1, results
    return results[0]


def test_cli_streamed_text_with_usage_and_system_prompt(ms, cli_run):
    marker = "CORRAL-APPEND-MARKER-" + uuid.uuid4().hex[:8]
    text = "Hello from the scripted model, in small streamed pieces."
    ms.scenario([{"name": "hello", "match": {"user_text_contains": "say hello",
                                             "system_contains": marker},
                  "reply": {"blocks": [{"type": "text", "text": text}],
                            "chunk_size": 6,
                            "usage": {"input_tokens": 1234, "output_tokens": 56,
                                      "cache_read_input_tokens": 78,
                                      "cache_creation_input_tokens": 9}}}])
    c = cli_run(extra_args=["--append-system-prompt", marker])
    lines, mid = c.turn("please say hello")
    init = of_type(lines, "system", "init")
    assert init and init[0]["model"] == MODEL and init[0]["session_id"]
    deltas = stream_deltas(lines, "text_delta")
    assert len(deltas) == 10 and "".join(d["text"] for d in deltas) == text
    events = [o["event"]["type"] for o in of_type(lines, "stream_event")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assistant = of_type(lines, "assistant")
    assert [b for a in assistant for b in a["message"]["content"]] == [
        {"type": "text", "text": text}]
    assert assistant[0]["message"]["id"].startswith("msg_")
    res = the_result(lines)
    assert res["subtype"] == "success" and res["is_error"] is False
    assert res["result"] == text and res["num_turns"] == 1
    assert res["user_message_uuid"] == mid
    u = res["usage"]
    assert (u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"],
            u["cache_creation_input_tokens"]) == (1234, 56, 78, 9)
    mu = res["model_usage_since_last_result"][MODEL]
    assert (mu["inputTokens"], mu["outputTokens"], mu["cacheReadInputTokens"],
            mu["cacheCreationInputTokens"]) == (1234, 56, 78, 9)
    (req,) = ms.message_requests()
    assert req["rule"] == "hello" and req["side_call"] is False
    assert req["path"] == "/v1/messages" and req["query"] == "beta=true"
    assert req["auth"]["x-api-key"] == {
        "present": True,
        "sha256_prefix": hashlib.sha256(PLACEHOLDER_KEY.encode()).hexdigest()[:16]}
    assert req["auth"]["authorization"] == {"present": False}
    assert req["body"]["stream"] is True and req["body"]["model"] == MODEL
    assert c.close() == 0


def test_cli_thinking_blocks(ms, cli_run):
    ms.scenario([{"match": {"user_text_contains": "think"}, "reply": {
        "blocks": [{"type": "thinking", "thinking": "Weighing the options carefully."},
                   {"type": "text", "text": "Decided."}],
        "chunk_size": 8}}])
    c = cli_run()
    lines, _ = c.turn("think first")
    thinking = stream_deltas(lines, "thinking_delta")
    assert "".join(d["thinking"] for d in thinking) == "Weighing the options carefully."
    assert len(stream_deltas(lines, "signature_delta")) == 1
    blocks = [b for a in of_type(lines, "assistant") for b in a["message"]["content"]]
    assert blocks[0]["type"] == "thinking"
    assert blocks[0]["thinking"] == "Weighing the options carefully."
    assert blocks[0]["signature"].startswith("scripted-sig-")
    assert blocks[1] == {"type": "text", "text": "Decided."}
    assert the_result(lines)["result"] == "Decided."


def test_cli_bash_tool_allowed_runs_in_workspace(ms, cli_run):
    ms.scenario([
        {"name": "ask", "match": {"user_text_contains": "make the marker"}, "reply": {
            "blocks": [{"type": "text", "text": "Creating the marker."},
                       {"type": "tool_use", "name": "Bash", "input": {
                           "command": "printf 'made by the scripted model\\n' > marker.txt && echo marker-written",
                           "description": "Create marker.txt"}}],
            "usage": {"input_tokens": 100, "output_tokens": 10}}},
        {"name": "done", "match": {"tool_result_contains": "marker-written"}, "reply": {
            "blocks": [{"type": "text", "text": "The marker file exists now."}],
            "usage": {"input_tokens": 200, "output_tokens": 20}}},
    ])
    c = cli_run()
    asked = []

    def on_permission(req):
        asked.append(req)
        return allow(req)

    lines, _ = c.turn("please make the marker", on_permission=on_permission)
    assert len(asked) == 1
    req = asked[0]
    assert req["subtype"] == "can_use_tool" and req["tool_name"] == "Bash"
    assert req["input"]["command"].startswith("printf 'made by the scripted model")
    tool_use = [b for a in of_type(lines, "assistant") for b in a["message"]["content"]
                if b["type"] == "tool_use"]
    assert len(tool_use) == 1 and tool_use[0]["id"] == req["tool_use_id"]
    assert tool_use[0]["id"].startswith("toolu_")
    results = [b for u in of_type(lines, "user") for b in u["message"]["content"]
               if isinstance(b, dict) and b.get("type") == "tool_result"]
    assert len(results) == 1 and results[0]["tool_use_id"] == req["tool_use_id"]
    assert "marker-written" in json.dumps(results[0]["content"])
    assert results[0]["is_error"] is False
    path = os.path.join(c.home.workspace, "marker.txt")
    with open(path) as f:
        assert f.read() == "made by the scripted model\n"
    res = the_result(lines)
    assert res["is_error"] is False and res["result"] == "The marker file exists now."
    assert res["num_turns"] == 2
    # The turn's usage is the sum over its two model calls.
    assert (res["usage"]["input_tokens"], res["usage"]["output_tokens"]) == (300, 30)
    mu = res["model_usage_since_last_result"][MODEL]
    assert (mu["inputTokens"], mu["outputTokens"]) == (300, 30)
    reqs = ms.message_requests()
    assert [r["rule"] for r in reqs] == ["ask", "done"]
    last = reqs[1]["body"]["messages"][-1]["content"]
    assert last[0]["type"] == "tool_result" and last[0]["tool_use_id"] == req["tool_use_id"]


def test_cli_denied_tool_result_goes_back_to_the_model(ms, cli_run):
    with open(DEFAULT_SCENARIO) as f:
        ms.scenario(json.load(f))
    c = cli_run()

    def deny(req):
        return {"behavior": "deny", "message": "not today"}

    lines, _ = c.turn("write hello.txt", on_permission=deny)
    assert not os.path.exists(os.path.join(c.home.workspace, "hello.txt"))
    res = the_result(lines)
    assert res["result"].startswith("The command did not run")
    assert [d["tool_name"] for d in res["permission_denials"]] == ["Bash"]
    assert [r["rule"] for r in ms.message_requests()] == [
        "demo: write hello.txt", "demo: tool denied or failed"]


def test_cli_offline_demo_scenario(ms, cli_run):
    with open(DEFAULT_SCENARIO) as f:
        scenario = json.load(f)
    for rule in scenario["rules"]:        # same replies, without the pauses
        rule["reply"].pop("chunk_delay_ms", None)
    ms.scenario(scenario)
    c = cli_run()
    lines, _ = c.turn("Please write hello.txt")
    with open(os.path.join(c.home.workspace, "hello.txt")) as f:
        assert f.read() == "Hello from the corral offline demo model!\n"
    assert the_result(lines)["result"].startswith("Done: hello.txt")
    lines, _ = c.turn("What can you do?")
    assert "offline demo model" in the_result(lines)["result"]
    assert len(stream_deltas(lines, "text_delta")) > 20   # word by word


def echo_summary(result):
    text = result["result"]
    assert text.startswith("ECHO "), text
    return json.loads(text[len("ECHO "):])


ECHO_SCENARIO = [
    {"name": "echo", "match": {"user_text_contains": "echo"},
     "reply": {"echo": True, "usage": {"input_tokens": 200, "output_tokens": 20}}},
    {"name": "ack", "match": {"any": True},
     "reply": {"blocks": [{"type": "text", "text": "Noted: {{user_text}}"}],
               "usage": {"input_tokens": 100, "output_tokens": 10}}},
]


def test_cli_second_message_sees_first_turn(ms, cli_run):
    ms.scenario(ECHO_SCENARIO)
    c = cli_run()
    lines, _ = c.turn("remember apples")
    assert the_result(lines)["result"] == "Noted: remember apples"
    lines, _ = c.turn("now echo")
    s = echo_summary(the_result(lines))
    assert s["user_texts"] == ["remember apples", "now echo"]
    assert s["assistant_texts"] == ["Noted: remember apples"]
    assert c.close() == 0


def test_cli_resume_carries_earlier_turns(ms, cli_run, cli_user):
    ms.scenario(ECHO_SCENARIO)
    home = CliHome(cli_user)
    try:
        session = str(uuid.uuid4())
        first = cli_run(home=home, session=session)
        lines, _ = first.turn("remember bananas")
        assert the_result(lines)["session_id"] == session
        assert first.close() == 0
        ms.reset()
        second = cli_run(home=home, session=session, resume=True)
        lines, _ = second.turn("echo what you know")
        res = the_result(lines)
        assert res["session_id"] == session
        s = echo_summary(res)
        assert s["user_texts"] == ["remember bananas", "echo what you know"]
        assert s["assistant_texts"] == ["Noted: remember bananas"]
        # Usage: model_usage_since_last_result counts this process's call
        # only; modelUsage (and total_cost_usd) carry on from the resumed
        # session's earlier process.
        since = res["model_usage_since_last_result"][MODEL]
        assert (since["inputTokens"], since["outputTokens"]) == (200, 20)
        total = res["modelUsage"][MODEL]
        assert (total["inputTokens"], total["outputTokens"]) == (300, 30)
        # The resumed process asked the model once: nothing else went out.
        reqs = ms.requests()
        assert [r["kind"] for r in reqs] == ["messages"]
        assert second.close() == 0
    finally:
        home.cleanup()


@pytest.mark.parametrize("status,etype", [(500, "api_error"), (429, "rate_limit_error")])
def test_cli_api_error_ends_turn_with_is_error(ms, cli_run, status, etype):
    ms.scenario([
        {"name": "fail", "times": 1, "match": {"user_text_contains": "fail"},
         "reply": {"error": {"status": status, "type": etype,
                             "message": f"scripted failure {status}"}}},
        {"name": "echo", "match": {"any": True}, "reply": {"echo": True}}])
    c = cli_run()
    lines, mid = c.turn("this will fail")
    res = the_result(lines)
    assert res["is_error"] is True and res["subtype"] == "success"
    assert res["terminal_reason"] == "api_error"
    assert res["api_error_status"] == status
    assert f"scripted failure {status}" in res["result"]
    assert res["user_message_uuid"] == mid
    errs = [a for a in of_type(lines, "assistant") if a.get("error")]
    assert errs, "no assistant line with an error field"
    assert len(ms.message_requests()) == 1            # CLAUDE_CODE_MAX_RETRIES=0
    assert not of_type(lines, "system", "api_retry")
    if status == 429:
        # Closing stdin now: the exit status follows the last result.
        assert c.close() == 1
        return
    # The process stays usable, and the failed prompt is merged into the next
    # user message, whose last block is the new prompt.
    lines, _ = c.turn("echo again")
    s = echo_summary(the_result(lines))
    assert s["user_texts"][-2:] == ["this will fail", "echo again"]
    last = ms.message_requests()[-1]["body"]["messages"]
    assert sum(1 for m in last if m["role"] == "user") == 1
    assert c.close() == 0       # the last result was a success


def test_cli_interrupt_during_slow_reply(ms, cli_run):
    slow = "word " * 200
    ms.scenario([
        {"name": "slow", "match": {"user_text_contains": "slowly"}, "reply": {
            "blocks": [{"type": "text", "text": slow}],
            "chunk_size": 5, "chunk_delay_ms": 50}},
        {"name": "fast", "match": {"any": True},
         "reply": {"blocks": [{"type": "text", "text": "fast answer"}]}}])
    c = cli_run()
    state = {}

    def on_line(o):
        if o["type"] == "stream_event" and "interrupt" not in state and \
                o["event"]["type"] == "content_block_delta":
            state["interrupt"] = c.control("interrupt")
            state["at"] = time.monotonic()

    t0 = time.monotonic()
    lines, _ = c.turn("answer slowly", on_line=on_line)
    elapsed = time.monotonic() - t0
    assert "interrupt" in state
    responses = [o for o in of_type(lines, "control_response")
                 if o["response"].get("request_id") == state["interrupt"]]
    assert responses and responses[0]["response"]["subtype"] == "success"
    res = the_result(lines)
    assert res["is_error"] is True
    assert res["terminal_reason"].startswith("aborted"), res["terminal_reason"]
    assert elapsed < 8, "the slow reply was not cut short"   # full reply: ~10 s
    assert len(stream_deltas(lines, "text_delta")) < 100
    # The server saw the CLI drop the stream.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (rec,) = ms.message_requests()
        if rec.get("client_disconnected"):
            break
        time.sleep(0.1)
    assert rec.get("client_disconnected") is True, rec
    lines, _ = c.turn("and now quickly")
    assert the_result(lines)["result"] == "fast answer"


def test_cli_subagent_and_task_notification_are_flagged(ms, cli_run):
    # 2.1.332 runs an Agent tool call in the background: the main turn ends
    # at once, the sub-agent asks the model (its system prompt marks it), and
    # when it finishes the CLI starts a turn of its own with a
    # <task-notification>. Rules can tell all three apart.
    ms.scenario([
        {"name": "spawn", "match": {"user_text_contains": "spawn"}, "reply": {
            "blocks": [{"type": "tool_use", "name": "Agent", "input": {
                "description": "sub task", "prompt": "count to three",
                "subagent_type": "general-purpose"}}]}},
        {"name": "sub", "match": {"subagent": True},
         "reply": {"blocks": [{"type": "text", "text": "one two three"}]}},
        {"name": "notified", "match": {"task_notification": True},
         "reply": {"blocks": [{"type": "text", "text": "the agent finished"}]}},
        {"name": "main", "match": {"tool_result": True, "subagent": False},
         "reply": {"blocks": [{"type": "text", "text": "agent started"}]}},
    ])
    c = cli_run()
    lines, mid = c.turn("spawn an agent")
    first = the_result(lines)
    assert first["result"] == "agent started" and first["user_message_uuid"] == mid
    assert of_type(lines, "system", "task_started")
    second = the_result(c.collect())      # the CLI's own turn
    assert second["result"] == "the agent finished"
    assert second.get("user_message_uuid") is None
    assert second["origin"]["kind"] == "task-notification"
    recs = {r["rule"]: r for r in ms.message_requests()}
    assert set(recs) == {"spawn", "sub", "notified", "main"}
    assert recs["sub"]["subagent"] is True and recs["main"]["subagent"] is False
    assert recs["notified"]["task_notification"] is True
    assert c.close() == 0
