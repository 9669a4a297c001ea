"""Helpers of the run-pipeline tests: the scripted model server, an SSE
reader, and a chat client over corrald's HTTP API."""

import json
import os
import queue
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import API, corral_src, require_env

PY = "/usr/bin/python3"


class ModelServer:
    """tools/model_server.py on a free loopback port; the scenario is
    replaced per test through its /_scripted/ API."""

    def __init__(self, logdir):
        script = os.path.join(corral_src(), "tools", "model_server.py")
        scenario = os.path.join(corral_src(), "tools", "scenarios",
                                "default.json")
        self.log = open(os.path.join(logdir, "model_server.log"), "ab")
        self.proc = subprocess.Popen(
            [PY, script, "--port", "0", "--scenario", scenario],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), f"model server: {line!r}"
        self.base = "http://" + line.split()[-1].strip()

    def scenario(self, rules, **extra):
        body = {"rules": rules, **extra}
        r = requests.post(self.base + "/_scripted/scenario", json=body,
                          timeout=10)
        assert r.status_code == 200, r.text
        requests.post(self.base + "/_scripted/reset", timeout=10)

    def requests(self):
        r = requests.get(self.base + "/_scripted/requests", timeout=10)
        r.raise_for_status()
        body = r.json()
        return body["requests"] if isinstance(body, dict) else body

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def pipeline_env(model, **extra):
    """corrald's environment for runs of the real CLI against the
    scripted model (no retries, long-lived access tokens)."""
    return {
        "CORRAL_MODEL_UPSTREAM_URL": model.base,
        "CORRAL_MODEL_API_KEY": "sk-test-upstream-key",
        "CORRAL_CLI_PATH": cli_path(),
        "CORRAL_SANDBOX_INIT_PATH": require_env("CORRAL_SANDBOX_INIT"),
        "CORRAL_CLI_MAX_RETRIES": "0",
        "CORRAL_ACCESS_TOKEN_TTL": "3600",
        **extra,
    }


@pytest.fixture(scope="module")
def model(logdir):
    """The scripted model server, one per test module."""
    m = ModelServer(logdir)
    yield m
    m.stop()


def text_rule(match, text, **reply):
    return {"match": {"user_text_contains": match},
            "reply": {"blocks": [{"type": "text", "text": text}], **reply}}


class SSE:
    """Reads one chat stream in a thread over a plain socket (a buffered
    HTTP client would sit on small frames); events land in a queue as
    dicts {id, event, data}. Comment lines (heartbeats) are counted."""

    def __init__(self, srv, chat_id, token, after=None, last_event_id=None,
                 query_token=False):
        path = f"{API}/chats/{chat_id}/stream"
        params = []
        if after is not None:
            params.append(f"after={after}")
        headers = ["Accept: text/event-stream", "Host: 127.0.0.1"]
        if query_token:
            params.append(f"access_token={token}")
        else:
            headers.append(f"Authorization: Bearer {token}")
        if last_event_id is not None:
            headers.append(f"Last-Event-ID: {last_event_id}")
        if params:
            path += "?" + "&".join(params)
        self.sock = socket.create_connection(("127.0.0.1", srv.port), 10)
        self.sock.sendall((f"GET {path} HTTP/1.1\r\n" + "\r\n".join(headers)
                           + "\r\n\r\n").encode())
        self.events = queue.Queue()
        self.pings = 0
        self.closed = threading.Event()
        self.buf = b""
        head = self._read_head()
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.decode("latin-1")
        self.body = b""
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.buf
            self.closed.set()

    def _read_head(self):
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"stream closed before its head: "
                                     f"{self.buf!r}")
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def _lines(self):
        self.sock.settimeout(None)
        while True:
            while b"\n" in self.buf:
                line, _, self.buf = self.buf.partition(b"\n")
                yield line.rstrip(b"\r").decode()
            data = self.sock.recv(65536)
            if not data:
                return
            self.buf += data

    def _read(self):
        ev = {}
        try:
            for raw in self._lines():
                if raw == "":
                    if "event" in ev or "data" in ev:
                        ev["data"] = json.loads(ev.get("data", "null"))
                        self.events.put(ev)
                    ev = {}
                elif raw.startswith(":"):
                    self.pings += 1
                else:
                    key, _, value = raw.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if key == "data" and "data" in ev:
                        ev["data"] += "\n" + value
                    else:
                        ev[key] = value
        except OSError:
            pass
        finally:
            self.closed.set()

    def until(self, pred, timeout=60):
        """Collects events until pred(event) holds; returns them all."""
        got = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                ev = self.events.get(timeout=0.2)
            except queue.Empty:
                if self.closed.is_set() and self.events.empty():
                    break
                continue
            got.append(ev)
            if pred(ev):
                return got
        raise AssertionError(
            f"stream condition not met in {timeout}s; got "
            f"{[(e.get('id'), e.get('event')) for e in got]}")

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def finished(reply_id):
    def pred(ev):
        d = ev.get("data") or {}
        return (ev.get("event") == "message_status" and
                d.get("message_id") == reply_id and
                d.get("status") in ("completed", "failed", "cancelled")
                and d.get("phase") in ("done", "failed", "cancelled"))
    return pred


class Chat:
    def __init__(self, srv, user, **fields):
        self.srv = srv
        self.user = user
        r = srv.post("/chats", json=fields, token=user.access)
        assert r.status_code == 201, r.text
        self.body = r.json()
        self.id = self.body["id"]

    def send(self, content, expect=202, **extra):
        r = self.srv.post(f"/chats/{self.id}/messages",
                          json={"content": content, **extra},
                          token=self.user.access)
        assert r.status_code == expect, r.text
        return r.json()

    def stream(self, after=None, **kw):
        return SSE(self.srv, self.id, self.user.access, after=after, **kw)

    def message(self, mid):
        r = self.srv.get(f"/chats/{self.id}/messages/{mid}",
                         token=self.user.access)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_reply(self, reply_id, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.message(reply_id)
            if m["status"] in ("completed", "failed", "cancelled"):
                return m
            time.sleep(0.2)
        raise AssertionError(f"reply {reply_id} still {m['status']}")

    def wait_idle(self, timeout=60):
        """Until no run holds the chat (a completed reply's checkpoint
        still runs after its status is final)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.srv.get(f"/chats/{self.id}/status",
                             token=self.user.access)
            assert r.status_code == 200, r.text
            if r.json()["status"] == "idle":
                return
            time.sleep(0.1)
        raise AssertionError(f"chat {self.id} still {r.json()['status']}")

    def workspace(self):
        return os.path.join(self.srv.data_dir, "sandboxes", self.id,
                            "workspace")


def types(events):
    return [e["event"] for e in events]


def cli_path():
    return require_env("CORRAL_CLI_PATH")
