#!/usr/bin/env python3
"""corral's scripted model server: a small Anthropic Messages API look-alike.

It speaks enough of the Messages API for the real Claude Code CLI to run
against it: POST /v1/messages (streaming SSE and non-streaming),
POST /v1/messages/count_tokens, GET /v1/models, and Anthropic-shaped errors
for everything else. What it answers comes from a scenario file (JSON, see
tools/scenarios/README.md): rules tried in order, each matching on the last
content block of the last user message (or the system prompt, the model, the
n-th request ...) and replying with scripted blocks (text, thinking,
tool_use), an echo of the conversation, or an API error.

Used by the tests, by the benchmarks, and by tools/run as the offline demo
model when no real API key is configured.

    model_server.py --port N [--host 127.0.0.1] --scenario FILE [--log FILE]

Prints "listening on HOST:PORT" on stdout once ready (--port 0 picks a free
port). Test-only endpoints under /_scripted/: GET requests (the recorded
requests), POST reset, GET/POST scenario (replace the scenario at run time).

Standard library only; runs with Debian's /usr/bin/python3.
"""

import argparse
import copy
import hashlib
import json
import math
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SERVER_NAME = "corral-scripted-model"

# Headers whose values are never recorded: only whether they were present
# and a SHA-256 prefix of the value.
SECRET_HEADERS = ("x-api-key", "authorization", "proxy-authorization",
                  "cookie")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
    529: "overloaded_error",
}

DEFAULT_CHUNK_SIZE = 32
DEFAULT_MAX_RECORDS = 200
MAX_BODY = 64 * 1024 * 1024

REMINDER_ANY_RE = re.compile(r"\s*<system-reminder>.*?</system-reminder>", re.S)
COMPACT_RE = re.compile(
    r"\A\s*CRITICAL: Respond with TEXT ONLY|"
    r"create a detailed summary of the conversation")
CWD_RE = re.compile(r"(?:Primary working directory|Working directory):\s*(\S+)")
TEMPLATE_RE = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


class ScenarioError(ValueError):
    pass


def jdump(obj):
    """Compact JSON, as the Anthropic API writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def estimate_tokens(nchars):
    return max(1, math.ceil(nchars / 4))


def new_id(prefix):
    return prefix + uuid.uuid4().hex[:24]


# ------------------------------------------------------------------ scenario

MATCH_KEYS = {
    "any", "user_text_contains", "user_text_regex", "user_text_equals",
    "tool_result", "tool_result_contains", "tool_result_regex",
    "tool_result_is_error", "system_contains", "system_regex", "model",
    "has_tools", "tool_available", "side_call", "turn", "times",
    "ignore_case", "stream", "last_block", "side_kind", "subagent",
    "task_notification",
}
REPLY_KEYS = {
    "blocks", "echo", "error", "stop_reason", "usage", "chunk_delay_ms",
    "chunk_size", "first_delay_ms", "model", "stream_error",
    "drop_after_events", "ping",
}
BLOCK_TYPES = {"text", "thinking", "redacted_thinking", "tool_use"}
RULE_KEYS = {"name", "match", "reply", "times", "comment", "description"}


def _check_str_or_list(value, what):
    if isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return
    raise ScenarioError(f"{what}: expected a string or a list of strings")


def _check_reply(reply, where):
    if not isinstance(reply, dict):
        raise ScenarioError(f"{where}: reply must be an object")
    unknown = set(reply) - REPLY_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown reply keys {sorted(unknown)}")
    kinds = [k for k in ("blocks", "echo", "error") if k in reply]
    if not kinds:
        raise ScenarioError(f"{where}: reply needs blocks, echo or error")
    if "error" in reply:
        if len(kinds) > 1:
            raise ScenarioError(f"{where}: an error reply has no blocks")
        err = reply["error"]
        if not isinstance(err, dict) or not isinstance(err.get("status"), int):
            raise ScenarioError(f"{where}: error needs an integer status")
        if not 400 <= err["status"] <= 599:
            raise ScenarioError(f"{where}: error status must be 4xx or 5xx")
    blocks = reply.get("blocks", [])
    if not isinstance(blocks, list):
        raise ScenarioError(f"{where}: blocks must be a list")
    for i, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") not in BLOCK_TYPES:
            raise ScenarioError(
                f"{where}: block {i}: type must be one of {sorted(BLOCK_TYPES)}")
        t = b["type"]
        if t == "text" and not isinstance(b.get("text"), str):
            raise ScenarioError(f"{where}: block {i}: text needs 'text'")
        if t == "thinking" and not isinstance(b.get("thinking"), str):
            raise ScenarioError(f"{where}: block {i}: thinking needs 'thinking'")
        if t == "redacted_thinking" and not isinstance(b.get("data"), str):
            raise ScenarioError(f"{where}: block {i}: redacted_thinking needs 'data'")
        if t == "tool_use":
            if not isinstance(b.get("name"), str):
                raise ScenarioError(f"{where}: block {i}: tool_use needs 'name'")
            if not isinstance(b.get("input", {}), dict):
                raise ScenarioError(f"{where}: block {i}: tool_use input must be an object")
    cs = reply.get("chunk_size")
    if cs is not None and cs != "word" and not (isinstance(cs, int) and cs > 0):
        raise ScenarioError(f"{where}: chunk_size must be a positive integer or \"word\"")
    for k in ("chunk_delay_ms", "first_delay_ms"):
        v = reply.get(k)
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise ScenarioError(f"{where}: {k} must be a number >= 0")
    usage = reply.get("usage")
    if usage is not None:
        if not isinstance(usage, dict) or not all(
                isinstance(v, int) for v in usage.values()):
            raise ScenarioError(f"{where}: usage must map names to integers")


def load_scenario(data):
    """Validate a scenario (already parsed JSON); returns the normalised form
    {"rules": [...], "fallback": reply|None, "side_reply": reply|None}."""
    if isinstance(data, list):
        data = {"rules": data}
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ScenarioError("a scenario is a list of rules, or an object with \"rules\"")
    unknown = set(data) - {"rules", "fallback", "side_reply", "description",
                           "name", "comment"}
    if unknown:
        raise ScenarioError(f"unknown scenario keys {sorted(unknown)}")
    rules = []
    for i, rule in enumerate(data["rules"]):
        where = f"rule {i}"
        if not isinstance(rule, dict):
            raise ScenarioError(f"{where}: must be an object")
        if isinstance(rule.get("name"), str):
            where += f" ({rule['name']})"
        unknown = set(rule) - RULE_KEYS
        if unknown:
            raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
        match = rule.get("match", {"any": True})
        if not isinstance(match, dict):
            raise ScenarioError(f"{where}: match must be an object")
        unknown = set(match) - MATCH_KEYS
        if unknown:
            raise ScenarioError(f"{where}: unknown match keys {sorted(unknown)}")
        for k in ("user_text_contains", "tool_result_contains", "system_contains"):
            if k in match:
                _check_str_or_list(match[k], f"{where}: {k}")
        for k in ("user_text_regex", "tool_result_regex", "system_regex"):
            if k in match:
                try:
                    re.compile(match[k])
                except (re.error, TypeError) as e:
                    raise ScenarioError(f"{where}: {k}: {e}") from None
        if "side_call" in match and match["side_call"] not in (True, False, "any"):
            raise ScenarioError(f"{where}: side_call must be true, false or \"any\"")
        times = rule.get("times", match.get("times"))
        if times is not None and not (isinstance(times, int) and times >= 0):
            raise ScenarioError(f"{where}: times must be an integer >= 0")
        turn = match.get("turn")
        if turn is not None and not (
                (isinstance(turn, int) and turn >= 1) or
                (isinstance(turn, list) and all(isinstance(t, int) for t in turn))):
            raise ScenarioError(f"{where}: turn must be an integer >= 1 or a list")
        if "reply" not in rule:
            raise ScenarioError(f"{where}: no reply")
        _check_reply(rule["reply"], where)
        rules.append({"index": i, "name": rule.get("name", f"rule {i}"),
                      "match": match, "reply": rule["reply"], "times": times})
    out = {"rules": rules, "fallback": None, "side_reply": None,
           "source": data}
    for k in ("fallback", "side_reply"):
        if data.get(k) is not None:
            _check_reply(data[k], k)
            out[k] = data[k]
    return out


# --------------------------------------------------------- request analysis

def text_of(content):
    """Plain text of a message content or a tool_result content."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    if isinstance(content, list):
        for b in content:
            if isinstance(b, dict) and b.get("type") == "text":
                parts.append(b.get("text", ""))
    return "\n".join(parts)


def blocks_of(content):
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def is_reminder(block):
    """A text block holding nothing but <system-reminder> sections."""
    text = block.get("text", "")
    return (block.get("type") == "text" and "<system-reminder>" in text and
            not strip_reminders(text).strip())


def strip_reminders(text):
    """A text without the <system-reminder> sections the CLI appends (it adds
    them to tool results too)."""
    return REMINDER_ANY_RE.sub("", text).rstrip()


def system_text(body):
    s = body.get("system")
    if isinstance(s, str):
        return s
    return text_of(s)


class RequestView:
    """What the matcher needs to know about one /v1/messages request."""

    def __init__(self, body):
        self.body = body
        self.model = str(body.get("model", ""))
        self.messages = body.get("messages") or []
        if not isinstance(self.messages, list):
            self.messages = []
        self.system = system_text(body)
        tools = body.get("tools") or []
        self.tool_names = [t.get("name") for t in tools if isinstance(t, dict)]
        self.stream = bool(body.get("stream"))
        self.last_block = None
        last_user = None
        for m in reversed(self.messages):
            if isinstance(m, dict) and m.get("role") == "user":
                last_user = m
                break
        if last_user is not None:
            blocks = blocks_of(last_user.get("content"))
            real = [b for b in blocks if not is_reminder(b)]
            if real or blocks:
                self.last_block = (real or blocks)[-1]
        lb = self.last_block or {}
        self.last_type = lb.get("type")
        self.user_text = lb.get("text", "") if self.last_type == "text" else None
        if self.last_type == "tool_result":
            self.tool_result = strip_reminders(text_of(lb.get("content")))
            self.tool_result_is_error = bool(lb.get("is_error"))
        else:
            self.tool_result = None
            self.tool_result_is_error = None
        # Sub-agents (Agent/Task tool) run the main loop with their own
        # prompt; the CLI marks them in the system prompt's billing line.
        self.subagent = "cc_is_subagent=true" in self.system
        # A turn the CLI starts itself when a background task ends.
        self.task_notification = bool(
            self.user_text and "<task-notification>" in self.user_text)
        self.side_kind = self._side_kind()
        self.side_call = self.side_kind is not None

    def _side_kind(self):
        """None for a main-loop request, else what kind of helper call.

        The CLI's main loop (and its sub-agents) offers tools, asks for
        context_management and starts the conversation with an environment
        reminder ("Primary working directory"); with --tools "" it still
        sends the last two. Its conversation compaction (/compact,
        auto-compact) has the same shape but ends with the compaction
        instructions. Other helper calls (titles, summaries, topic checks)
        have none of these; a one-token call is a probe whatever it
        carries."""
        if self.body.get("max_tokens") == 1:
            return "probe"
        if self.user_text is not None and COMPACT_RE.search(self.user_text):
            return "compact"
        if self.tool_names or "context_management" in self.body:
            return None
        first = self.messages[0] if self.messages else None
        if isinstance(first, dict) and first.get("role") == "user" and any(
                "Primary working directory" in b.get("text", "")
                for b in blocks_of(first.get("content"))):
            return None
        return "helper"

    def cwd(self):
        for text in [self.system] + [
                b.get("text", "") for m in self.messages[:1]
                if isinstance(m, dict)
                for b in blocks_of(m.get("content"))]:
            m = CWD_RE.search(text or "")
            if m:
                return m.group(1)
        return "/workspace"

    def summary(self):
        """The conversation as the echo reply reports it."""
        user_texts, assistant_texts, tool_results, tool_uses = [], [], [], []
        for m in self.messages:
            if not isinstance(m, dict):
                continue
            for b in blocks_of(m.get("content")):
                t = b.get("type")
                if m.get("role") == "user":
                    if t == "text" and not is_reminder(b):
                        user_texts.append(b.get("text", ""))
                    elif t == "tool_result":
                        tool_results.append(
                            strip_reminders(text_of(b.get("content"))))
                else:
                    if t == "text":
                        assistant_texts.append(b.get("text", ""))
                    elif t == "tool_use":
                        tool_uses.append(b.get("name"))
        return {"user_texts": user_texts, "assistant_texts": assistant_texts,
                "tool_results": tool_results, "tool_uses": tool_uses,
                "messages": len(self.messages), "model": self.model}


def _contains(haystack, needles, ignore_case):
    if haystack is None:
        return False
    if isinstance(needles, str):
        needles = [needles]
    if ignore_case:
        haystack = haystack.lower()
        needles = [n.lower() for n in needles]
    return all(n in haystack for n in needles)


def _regex(haystack, pattern, ignore_case):
    if haystack is None:
        return False
    return re.search(pattern, haystack, re.I if ignore_case else 0) is not None


def rule_matches(match, view, turn):
    ic = bool(match.get("ignore_case"))
    side = match.get("side_call", "any" if "side_kind" in match else False)
    if side != "any" and bool(side) != view.side_call:
        return False
    if "any" in match and not match["any"]:
        return False
    if "turn" in match:
        want = match["turn"]
        if turn is None or (turn not in want if isinstance(want, list)
                            else turn != want):
            return False
    if "model" in match and match["model"] not in view.model:
        return False
    if "stream" in match and bool(match["stream"]) != view.stream:
        return False
    if "has_tools" in match and bool(match["has_tools"]) != bool(view.tool_names):
        return False
    if "tool_available" in match and match["tool_available"] not in view.tool_names:
        return False
    if "subagent" in match and bool(match["subagent"]) != view.subagent:
        return False
    if "task_notification" in match and \
            bool(match["task_notification"]) != view.task_notification:
        return False
    if "side_kind" in match and match["side_kind"] != view.side_kind:
        return False
    if "last_block" in match and match["last_block"] != view.last_type:
        return False
    if "user_text_contains" in match and not _contains(
            view.user_text, match["user_text_contains"], ic):
        return False
    if "user_text_regex" in match and not _regex(
            view.user_text, match["user_text_regex"], ic):
        return False
    if "user_text_equals" in match:
        ut = view.user_text
        want = match["user_text_equals"]
        if ut is None or (ut.strip().lower() != want.strip().lower() if ic
                          else ut.strip() != want.strip()):
            return False
    if "tool_result" in match and bool(match["tool_result"]) != (
            view.last_type == "tool_result"):
        return False
    if "tool_result_contains" in match and not _contains(
            view.tool_result, match["tool_result_contains"], ic):
        return False
    if "tool_result_regex" in match and not _regex(
            view.tool_result, match["tool_result_regex"], ic):
        return False
    if "tool_result_is_error" in match and (
            view.tool_result_is_error is None or
            bool(match["tool_result_is_error"]) != view.tool_result_is_error):
        return False
    if "system_contains" in match and not _contains(
            view.system, match["system_contains"], ic):
        return False
    if "system_regex" in match and not _regex(
            view.system, match["system_regex"], ic):
        return False
    return True


# ------------------------------------------------------------ reply building

def schema_instance(schema, depth=0):
    """A minimal JSON value that satisfies a (simple) JSON schema."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for k in ("anyOf", "oneOf", "allOf"):
        if schema.get(k):
            return schema_instance(schema[k][0], depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = t[0] if t else None
    if t == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: schema_instance(v, depth + 1) for k, v in props.items()}
    if t == "array":
        return []
    if t == "string":
        return "Scripted reply"
    if t in ("integer", "number"):
        return schema.get("minimum", 0)
    if t == "boolean":
        return False
    return None


def builtin_side_reply(view):
    """The answer to a helper call no rule claimed."""
    body = view.body
    fmt = body.get("output_format")
    if fmt is None and isinstance(body.get("output_config"), dict):
        fmt = body["output_config"].get("format")
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        return {"blocks": [{"type": "text",
                            "text": jdump(schema_instance(fmt["schema"]))}]}
    if view.side_kind == "probe":
        return {"blocks": [{"type": "text", "text": "ok"}]}
    if view.side_kind == "compact":
        users = [t for t in view.summary()["user_texts"]
                 if not COMPACT_RE.search(t)]
        listed = "\n".join(f"    - {t[:200]}" for t in users) or "    - (none)"
        return {"blocks": [{"type": "text", "text":
                            "<analysis>\nScripted model: a fixed summary.\n"
                            "</analysis>\n<summary>\n"
                            "1. Primary Request and Intent: a conversation "
                            "with the scripted model.\n"
                            "6. All user messages:\n" + listed + "\n</summary>"}]}
    sys_l = view.system.lower()
    if "title" in sys_l:
        return {"blocks": [{"type": "text", "text": "Scripted conversation"}]}
    if "json" in sys_l:
        return {"blocks": [{"type": "text", "text": "{}"}]}
    return {"blocks": [{"type": "text", "text": "Scripted reply."}]}


def apply_templates(value, ctx):
    if isinstance(value, str):
        return TEMPLATE_RE.sub(
            lambda m: str(ctx[m.group(1)]) if m.group(1) in ctx else m.group(0),
            value)
    if isinstance(value, list):
        return [apply_templates(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: apply_templates(v, ctx) for k, v in value.items()}
    return value


def build_blocks(reply, view, ctx):
    """The reply's content blocks with ids, templates and the echo applied."""
    blocks = []
    for b in apply_templates(copy.deepcopy(reply.get("blocks", [])), ctx):
        t = b["type"]
        if t == "text":
            blocks.append({"type": "text", "text": b["text"]})
        elif t == "thinking":
            sig = b.get("signature") or ("scripted-sig-" + hashlib.sha256(
                b["thinking"].encode()).hexdigest()[:32])
            blocks.append({"type": "thinking", "thinking": b["thinking"],
                           "signature": sig})
        elif t == "redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": b["data"]})
        elif t == "tool_use":
            blocks.append({"type": "tool_use", "id": b.get("id") or new_id("toolu_"),
                           "name": b["name"], "input": b.get("input", {})})
    echo = reply.get("echo")
    if echo:
        prefix = echo.get("prefix", "ECHO ") if isinstance(echo, dict) else "ECHO "
        blocks.append({"type": "text", "text": prefix + jdump(view.summary())})
    return blocks


def block_chars(b):
    t = b["type"]
    if t == "text":
        return len(b["text"])
    if t == "thinking":
        return len(b["thinking"])
    if t == "tool_use":
        return len(jdump(b["input"])) + len(b["name"])
    return len(b.get("data", ""))


def build_usage(reply, view, blocks):
    given = reply.get("usage") or {}
    prompt_chars = len(view.system) + len(jdump(view.messages))
    usage = {
        "input_tokens": given.get("input_tokens", estimate_tokens(prompt_chars)),
        "cache_creation_input_tokens": given.get("cache_creation_input_tokens", 0),
        "cache_read_input_tokens": given.get("cache_read_input_tokens", 0),
        "output_tokens": given.get("output_tokens", estimate_tokens(
            sum(block_chars(b) for b in blocks))),
    }
    for k, v in given.items():
        usage.setdefault(k, v)
    return usage


def split_text(text, size):
    """Delta pieces of a text: fixed-size pieces, or "word" (a word and the
    whitespace after it)."""
    if text == "":
        return [""]
    if size == "word":
        pieces = re.findall(r"\s*\S+\s*", text)
        return pieces or [text]
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream_events(msg, blocks, usage, reply):
    """The (event type, data) pairs of one streamed reply."""
    size = reply.get("chunk_size") or DEFAULT_CHUNK_SIZE
    start_usage = {k: usage[k] for k in (
        "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")}
    start_usage["output_tokens"] = 1
    start_usage["service_tier"] = "standard"
    start = dict(msg, content=[], stop_reason=None, stop_sequence=None,
                 usage=start_usage)
    events = [("message_start", {"type": "message_start", "message": start})]
    if reply.get("ping", True):
        events.append(("ping", {"type": "ping"}))
    for i, b in enumerate(blocks):
        t = b["type"]
        if t == "text":
            events.append(("content_block_start", {
                "type": "content_block_start", "index": i,
                "content_block": {"type": "text", "text": ""}}))
            for piece in split_text(b["text"], size):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": i,
                    "delta": {"type": "text_delta", "text": piece}}))
        elif t == "thinking":
            events.append(("content_block_start", {
                "type": "content_block_start", "index": i,
                "content_block": {"type": "thinking", "thinking": "",
                                  "signature": ""}}))
            for piece in split_text(b["thinking"], size):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": i,
                    "delta": {"type": "thinking_delta", "thinking": piece}}))
            events.append(("content_block_delta", {
                "type": "content_block_delta", "index": i,
                "delta": {"type": "signature_delta",
                          "signature": b["signature"]}}))
        elif t == "redacted_thinking":
            events.append(("content_block_start", {
                "type": "content_block_start", "index": i,
                "content_block": dict(b)}))
        elif t == "tool_use":
            events.append(("content_block_start", {
                "type": "content_block_start", "index": i,
                "content_block": {"type": "tool_use", "id": b["id"],
                                  "name": b["name"], "input": {}}}))
            raw = jdump(b["input"])
            isize = size if isinstance(size, int) else DEFAULT_CHUNK_SIZE
            for piece in [""] + split_text(raw, isize):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": i,
                    "delta": {"type": "input_json_delta",
                              "partial_json": piece}}))
        events.append(("content_block_stop",
                       {"type": "content_block_stop", "index": i}))
    if reply.get("stream_error"):
        se = reply["stream_error"]
        etype = se.get("type", "overloaded_error")
        events.append(("error", {"type": "error", "error": {
            "type": etype, "message": se.get("message", etype)}}))
        return events
    events.append(("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
        "usage": {k: usage[k] for k in (
            "input_tokens", "cache_creation_input_tokens",
            "cache_read_input_tokens", "output_tokens")}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


# -------------------------------------------------------------------- state

class State:
    def __init__(self, scenario, log_file, max_records):
        self.lock = threading.Lock()
        self.scenario = scenario
        self.used = {}          # rule index -> times used
        self.turn = 0           # main (non-side) message requests seen
        self.records = []
        self.seq = 0
        self.log_file = log_file
        self.max_records = max_records

    def set_scenario(self, scenario):
        with self.lock:
            self.scenario = scenario
            self.used = {}
            self.turn = 0

    def reset(self):
        with self.lock:
            self.records = []
            self.used = {}
            self.turn = 0

    def choose(self, view):
        """(rule or None, reply, turn) for a /v1/messages request."""
        with self.lock:
            turn = None
            if not view.side_call:
                self.turn += 1
                turn = self.turn
            for rule in self.scenario["rules"]:
                if rule["times"] is not None and \
                        self.used.get(rule["index"], 0) >= rule["times"]:
                    continue
                if rule_matches(rule["match"], view, turn):
                    self.used[rule["index"]] = self.used.get(rule["index"], 0) + 1
                    return rule, rule["reply"], turn
            if view.side_call:
                return None, self.scenario["side_reply"] or builtin_side_reply(view), turn
            fb = self.scenario["fallback"]
            if fb is None:
                what = (repr(view.user_text[:200]) if view.user_text is not None
                        else f"a {view.last_type} block")
                fb = {"blocks": [{"type": "text", "text":
                                  "[scripted model] no scenario rule matched "
                                  f"{what}."}]}
            return None, fb, turn

    def add_record(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            if self.max_records > 0:
                self.records.append(rec)
                if len(self.records) > self.max_records:
                    del self.records[:len(self.records) - self.max_records]
        return rec

    def finish_record(self, rec):
        if self.log_file is None:
            return
        line = {k: v for k, v in rec.items() if k != "body"}
        line["body_bytes"] = rec.get("body_bytes", 0)
        with self.lock:
            try:
                self.log_file.write(jdump(line) + "\n")
                self.log_file.flush()
            except (OSError, ValueError):
                pass

    def snapshot(self, since=0):
        with self.lock:
            return [r for r in self.records if r["seq"] > since]


def header_fingerprint(value):
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


# ------------------------------------------------------------------ handler

class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    sys_version = ""
    state = None            # set in main()
    scripted_api = True
    stream_framing = "chunked"

    def log_message(self, fmt, *args):
        pass

    # -- plumbing

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ClientGone()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
                if len(out) > MAX_BODY:
                    raise ValueError("body too large")
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n > 0 else b""

    def end_headers(self):
        self.headers_sent = True
        super().end_headers()

    def send_json(self, status, obj, extra_headers=()):
        data = jdump(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", new_id("req_"))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def send_error_json(self, status, etype, message, extra_headers=()):
        self.send_json(status, {"type": "error",
                                "error": {"type": etype, "message": message}},
                       extra_headers)

    def record_headers(self):
        headers, auth = {}, {}
        for k, v in self.headers.items():
            lk = k.lower()
            if lk in SECRET_HEADERS:
                entry = {"present": True, "sha256_prefix": header_fingerprint(v)}
                if lk == "authorization" and " " in v:
                    entry["scheme"] = v.split(" ", 1)[0]
                    entry["credential_sha256_prefix"] = header_fingerprint(
                        v.split(" ", 1)[1].strip())
                auth[lk] = entry
            else:
                headers[lk] = v
        for k in ("x-api-key", "authorization"):
            auth.setdefault(k, {"present": False})
        return headers, auth

    # -- dispatch

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_OPTIONS(self):
        self.dispatch()

    def dispatch(self):
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            raw = self.read_body()
        except (ValueError, ClientGone):
            self.close_connection = True
            try:
                self.send_error_json(400, "invalid_request_error",
                                     "unreadable request body")
            except OSError:
                pass
            return
        if path.startswith("/_scripted"):
            if not self.scripted_api:
                return self.send_error_json(404, "not_found_error",
                                            f"Not found: {self.command} {url.path}")
            return self.scripted(path, url, raw)
        headers, auth = self.record_headers()
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        rec = self.state.add_record({
            "time": time.time(), "method": self.command, "path": url.path,
            "query": url.query, "headers": headers, "auth": auth,
            "body": body, "body_bytes": len(raw), "kind": "other",
        })
        self.headers_sent = False
        try:
            self.route(path, body, rec)
        except (ClientGone, BrokenPipeError, ConnectionResetError):
            rec["client_disconnected"] = True
            self.close_connection = True
        except Exception as e:      # a bug here must not look like a hang
            traceback.print_exc(file=sys.stderr)
            rec["status"] = 500
            rec["server_error"] = repr(e)
            self.close_connection = True
            if not self.headers_sent:
                try:
                    self.send_error_json(500, "api_error",
                                         f"scripted model server error: {e!r}")
                except OSError:
                    pass
        finally:
            rec.setdefault("status", None)
            self.state.finish_record(rec)

    def route(self, path, body, rec):
        m = self.command
        if path == "/v1/messages" and m == "POST":
            rec["kind"] = "messages"
            return self.messages(body, rec)
        if path == "/v1/messages/count_tokens" and m == "POST":
            rec["kind"] = "count_tokens"
            if not isinstance(body, dict):
                rec["status"] = 400
                return self.send_error_json(400, "invalid_request_error",
                                            "body must be a JSON object")
            view = RequestView(body)
            n = estimate_tokens(len(view.system) + len(jdump(view.messages)) +
                                len(jdump(body.get("tools") or [])))
            rec["status"] = 200
            return self.send_json(200, {"input_tokens": n})
        if path == "/v1/models" and m in ("GET", "HEAD"):
            rec["status"] = 200
            data = [model_info(x) for x in KNOWN_MODELS]
            return self.send_json(200, {"data": data, "has_more": False,
                                        "first_id": data[0]["id"],
                                        "last_id": data[-1]["id"]})
        if path.startswith("/v1/models/") and m in ("GET", "HEAD"):
            rec["status"] = 200
            return self.send_json(200, model_info(path.split("/", 3)[3]))
        if path == "/api/hello" and m in ("GET", "HEAD"):
            # The CLI's connectivity check (only without
            # CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC).
            rec["kind"] = "hello"
            rec["status"] = 200
            return self.send_json(200, {"message": "hello"})
        if path == "/" and m in ("GET", "HEAD"):
            rec["status"] = 200
            return self.send_json(200, {"server": SERVER_NAME,
                                        "description": "scripted Anthropic "
                                        "Messages API for tests and the "
                                        "offline demo"})
        rec["status"] = 404
        return self.send_error_json(404, "not_found_error",
                                    f"Not found: {m} {path}")

    # -- /v1/messages

    def messages(self, body, rec):
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) \
                or not body.get("model"):
            rec["status"] = 400
            return self.send_error_json(400, "invalid_request_error",
                                        "model and messages are required")
        view = RequestView(body)
        rule, reply, turn = self.state.choose(view)
        rec.update({
            "side_call": view.side_call, "side_kind": view.side_kind,
            "turn": turn, "subagent": view.subagent,
            "task_notification": view.task_notification, "model": view.model,
            "stream": view.stream, "last_block_type": view.last_type,
            "last_user_text": view.user_text,
            "rule": rule["name"] if rule else None,
            "rule_index": rule["index"] if rule else None,
        })
        first = reply.get("first_delay_ms") or 0
        if first:
            time.sleep(first / 1000.0)
        if "error" in reply:
            err = reply["error"]
            status = err["status"]
            etype = err.get("type") or ERROR_TYPES.get(status, "api_error")
            extra = []
            if status == 429 or "retry_after" in err:
                extra.append(("retry-after", str(err.get("retry_after", 1))))
            if status == 529 or etype == "overloaded_error":
                extra.append(("x-should-retry", "true"))
            rec["status"] = status
            rec["reply"] = {"error": etype}
            return self.send_error_json(
                status, etype, err.get("message") or f"scripted {etype}", extra)
        ctx = {"cwd": view.cwd(), "model": view.model, "turn": turn or 0,
               "user_text": view.user_text or ""}
        blocks = build_blocks(reply, view, ctx)
        usage = build_usage(reply, view, blocks)
        stop = reply.get("stop_reason") or (
            "tool_use" if any(b["type"] == "tool_use" for b in blocks)
            else "end_turn")
        msg = {"id": new_id("msg_"), "type": "message", "role": "assistant",
               "model": reply.get("model") or view.model}
        rec["status"] = 200
        rec["reply"] = {"id": msg["id"], "stop_reason": stop, "usage": usage,
                        "blocks": [{k: v for k, v in b.items()
                                    if k in ("type", "id", "name")}
                                   for b in blocks]}
        if not view.stream:
            out = dict(msg, content=blocks, stop_reason=stop,
                       stop_sequence=None, usage=usage)
            return self.send_json(200, out)
        msg["stop_reason"] = stop
        events = stream_events(msg, blocks, usage, reply)
        delay = (reply.get("chunk_delay_ms") or 0) / 1000.0
        drop = reply.get("drop_after_events")
        self.stream_sse(events, delay, drop, rec)

    def stream_sse(self, events, delay, drop, rec):
        chunked = self.stream_framing == "chunked"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", new_id("req_"))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()
        sent = 0
        for n, (etype, data) in enumerate(events):
            if drop is not None and n >= drop:
                rec["dropped_after_events"] = n
                self.close_connection = True
                self.wfile.flush()
                return
            if delay and n > 0:
                time.sleep(delay)
            payload = f"event: {etype}\ndata: {jdump(data)}\n\n".encode()
            if chunked:
                payload = b"%x\r\n%s\r\n" % (len(payload), payload)
            self.wfile.write(payload)
            self.wfile.flush()
            sent += 1
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        rec["events_sent"] = sent

    # -- /_scripted (tests only)

    def scripted(self, path, url, raw):
        st = self.state
        m = self.command
        if path == "/_scripted/requests" and m == "GET":
            q = parse_qs(url.query)
            since = int((q.get("since") or ["0"])[0])
            recs = st.snapshot(since)
            if (q.get("bodies") or ["1"])[0] in ("0", "false", "no"):
                recs = [{k: v for k, v in r.items() if k != "body"} for r in recs]
            return self.send_json(200, recs)
        if path == "/_scripted/reset" and m == "POST":
            st.reset()
            return self.send_json(200, {"ok": True})
        if path == "/_scripted/scenario" and m == "GET":
            with st.lock:
                src = st.scenario["source"]
            return self.send_json(200, src)
        if path == "/_scripted/scenario" and m in ("POST", "PUT"):
            try:
                scen = load_scenario(json.loads(raw or b"null"))
            except ValueError as e:     # ScenarioError and JSON errors
                return self.send_error_json(400, "invalid_request_error",
                                            f"bad scenario: {e}")
            st.set_scenario(scen)
            return self.send_json(200, {"ok": True,
                                        "rules": len(scen["rules"])})
        return self.send_error_json(404, "not_found_error",
                                    f"Not found: {m} {path}")


KNOWN_MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")


def model_info(model_id):
    return {"type": "model", "id": model_id, "display_name": model_id,
            "created_at": "2025-01-01T00:00:00Z"}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Scripted Anthropic Messages API server (tests, "
                    "benchmarks, offline demo).")
    ap.add_argument("--port", type=int, required=True,
                    help="TCP port; 0 picks a free one")
    ap.add_argument("--host", default="127.0.0.1",
                    help="listen address (default: loopback only)")
    ap.add_argument("--scenario", required=True, help="scenario JSON file")
    ap.add_argument("--log", help="append one JSON line per request here")
    ap.add_argument("--max-records", type=int, default=DEFAULT_MAX_RECORDS,
                    help="requests kept for GET /_scripted/requests "
                         "(oldest dropped first; 0 keeps none)")
    ap.add_argument("--no-scripted-api", action="store_true",
                    help="disable the /_scripted/ test endpoints")
    ap.add_argument("--stream-framing", choices=("chunked", "close"),
                    default="chunked",
                    help="streamed replies: chunked keep-alive (default) "
                         "or Connection: close")
    args = ap.parse_args(argv)

    try:
        with open(args.scenario, encoding="utf-8") as f:
            scenario = load_scenario(json.load(f))
    except (OSError, ValueError) as e:
        print(f"model_server: scenario {args.scenario}: {e}", file=sys.stderr)
        return 2
    log_file = None
    if args.log:
        log_file = open(args.log, "a", encoding="utf-8")

    Handler.state = State(scenario, log_file, max(0, args.max_records))
    Handler.scripted_api = not args.no_scripted_api
    Handler.stream_framing = args.stream_framing
    if ":" in args.host:
        Server.address_family = socket.AF_INET6
    try:
        httpd = Server((args.host, args.port), Handler)
    except OSError as e:
        print(f"model_server: cannot listen on {args.host}:{args.port}: {e}",
              file=sys.stderr)
        return 1

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    host, port = httpd.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        if log_file:
            log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
