"""Messages that carry attachments, end to end (API.md "Messages and
runs", "Files"): POST /messages with attachment ids, the files copied into
the workspace's attachments/ before the CLI gets the message, the CLI's
user message with image blocks and a listing of the files, retry, and
DELETE of an attachment in use."""

import base64
import os
import struct
import zlib

import pytest

from conftest import _TEST_SERVERS, assert_problem, register, serve
from pipeline_util import Chat, finished, model, pipeline_env  # noqa: F401

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00"
       b"\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc"
       b"\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00"
       b"\x00IEND\xaeB`\x82")


def noise_png(side):
    """A valid RGB PNG of side x side random pixels (random bytes do not
    compress: about 3 * side**2 bytes)."""
    rows = b"".join(b"\x00" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0,
                                       0)) +
            chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def srv(cluster, logdir, model):
    yield from serve(cluster, logdir, "attach_run", pipeline_env(model))


@pytest.fixture
def user(srv):
    _TEST_SERVERS.append(srv)
    return register(srv)


def upload(srv, user, chat_id, data, name, ctype="application/octet-stream"):
    r = srv.post(f"/chats/{chat_id}/attachments", token=user.access,
                 files={"file": (name, data, ctype)})
    assert r.status_code == 201, r.text
    return r.json()


def messages(srv, user, chat_id):
    r = srv.get(f"/chats/{chat_id}/messages", token=user.access)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def last_user_content(rec):
    """The content blocks of the last user message of a recorded
    request."""
    msgs = [m for m in rec["body"]["messages"] if m["role"] == "user"]
    content = msgs[-1]["content"]
    return ([{"type": "text", "text": content}]
            if isinstance(content, str) else content)


def requests_with(model, text):
    """Recorded main-loop requests whose last user message has a text
    block containing text."""
    found = []
    for rec in model.requests():
        if rec.get("kind") != "messages" or "body" not in rec:
            continue
        blocks = last_user_content(rec)
        if any(b.get("type") == "text" and text in b.get("text", "")
               for b in blocks):
            found.append(rec)
    return found


def reply_text(reply):
    return "".join(b.get("text", "") for b in reply["content"]
                   if b["type"] == "text")


def read_then_echo(trigger, path, secret):
    return [
        {"match": {"user_text_contains": trigger},
         "reply": {"blocks": [{"type": "tool_use", "name": "Read",
                               "input": {"file_path": path}}]}},
        {"match": {"tool_result_contains": secret},
         "reply": {"blocks": [{"type": "text", "text": "seen: " + secret}]}},
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "not seen"}]}},
    ]


def test_cli_reads_the_attachment(srv, model, user):
    secret = "the secret is 4217"
    model.scenario(read_then_echo(
        "read my attachment", "{{cwd}}/attachments/notes.txt", secret))
    chat = Chat(srv, user, permission_mode="auto")
    att = upload(srv, user, chat.id, (secret + "\n").encode(), "notes.txt",
                 "text/plain")
    sse = chat.stream(after=0)
    sent = chat.send("please read my attachment", attachments=[att["id"]])
    evs = sse.until(finished(sent["reply"]["id"]))
    sse.close()
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["status"] == "completed", reply
    assert reply_text(reply) == "seen: " + secret, reply

    # The objects are stored on the user message and in its event.
    assert sent["message"]["attachments"] == [att]
    assert chat.message(sent["message"]["id"])["attachments"] == [att]
    assert chat.message(sent["reply"]["id"])["attachments"] == []
    um = [e for e in evs if e["event"] == "user_message"]
    assert um and um[0]["data"]["attachments"] == [att], um

    # The file is in the workspace, owned like the workspace.
    path = os.path.join(chat.workspace(), "attachments", "notes.txt")
    with open(path, "rb") as f:
        assert f.read() == (secret + "\n").encode()
    assert os.stat(path).st_uid == os.stat(chat.workspace()).st_uid

    # The CLI's user message: a listing block with the path, then the text.
    recs = requests_with(model, "please read my attachment")
    assert recs, "the prompt never reached the model"
    blocks = [b for b in last_user_content(recs[0])
              if not b.get("text", "").startswith("<system-reminder>")]
    texts = [b["text"] for b in blocks if b["type"] == "text"]
    listing = [t for t in texts if "/workspace/attachments/notes.txt" in t]
    assert listing, blocks
    assert f"({len(secret) + 1} bytes, text/plain" in listing[0], listing
    assert texts[-1] == "please read my attachment", texts
    assert not any(b["type"] == "image" for b in blocks)


def test_image_arrives_as_image_block(srv, model, user):
    # The CLI (2.1.332) appends a text block "[Image: source: <its copy>]"
    # after the content, so the prompt is not the last block here.
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text",
                                           "text": "a tiny picture"}]}}])
    chat = Chat(srv, user)
    att = upload(srv, user, chat.id, PNG, "pixel.png", "image/png")
    assert att["content_type"] == "image/png"
    sent = chat.send("look at it", attachments=[att["id"]])
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["status"] == "completed", reply
    assert reply_text(reply) == "a tiny picture"

    recs = requests_with(model, "look at it")
    assert recs, "the prompt never reached the model"
    blocks = last_user_content(recs[0])
    images = [b for b in blocks if b["type"] == "image"]
    assert len(images) == 1, blocks
    src = images[0]["source"]
    assert src["type"] == "base64" and src["media_type"] == "image/png"
    assert base64.b64decode(src["data"]) == PNG
    listing = [b["text"] for b in blocks if b["type"] == "text" and
               "/workspace/attachments/pixel.png" in b["text"]]
    assert listing and "image/png, shown above" in listing[0], blocks
    with open(os.path.join(chat.workspace(), "attachments", "pixel.png"),
              "rb") as f:
        assert f.read() == PNG


def test_large_images(srv, model, user):
    """An image of many encoding slices arrives whole; one over 5 MiB is
    only listed."""
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    chat = Chat(srv, user)
    big = noise_png(300)           # about 270 KB: several slices
    huge = noise_png(1330)         # over 5 MiB
    assert 200000 < len(big) < 400000 and len(huge) > 5 << 20
    a = upload(srv, user, chat.id, big, "big.png")
    b = upload(srv, user, chat.id, huge, "huge.png")
    sent = chat.send("two big ones", attachments=[a["id"], b["id"]])
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["status"] == "completed", reply
    recs = requests_with(model, "two big ones")
    assert recs, "the prompt never reached the model"
    blocks = last_user_content(recs[0])
    images = [b for b in blocks if b["type"] == "image"]
    assert len(images) == 1, [b["type"] for b in blocks]
    assert base64.b64decode(images[0]["source"]["data"]) == big
    listing = [t["text"] for t in blocks if t["type"] == "text" and
               "attachments/huge.png" in t["text"]][0]
    assert "big.png (%d bytes, image/png, shown above)" % len(big) in listing
    assert "huge.png (%d bytes, image/png)" % len(huge) in listing
    with open(os.path.join(chat.workspace(), "attachments", "huge.png"),
              "rb") as f:
        assert f.read() == huge


def test_same_name_gets_a_suffix(srv, model, user):
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    chat = Chat(srv, user)
    a = upload(srv, user, chat.id, b"first\n", "dup.txt", "text/plain")
    b = upload(srv, user, chat.id, b"second\n", "dup.txt", "text/plain")
    c = upload(srv, user, chat.id, b"third\n", "noext", "text/plain")
    sent = chat.send("two of a name", attachments=[a["id"], b["id"], c["id"]])
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    folder = os.path.join(chat.workspace(), "attachments")

    def content(name):
        with open(os.path.join(folder, name), "rb") as f:
            return f.read()
    assert content("dup.txt") == b"first\n"
    assert content("dup (2).txt") == b"second\n"
    assert content("noext") == b"third\n"
    recs = requests_with(model, "two of a name")
    listing = [t["text"] for t in last_user_content(recs[0])
               if t["type"] == "text" and "attachments/" in t["text"]]
    assert "/workspace/attachments/dup (2).txt" in listing[0], listing

    # A later message with the same files: new names again.
    sent = chat.send("again", attachments=[a["id"], c["id"]])
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    assert content("dup (3).txt") == b"first\n"
    assert content("noext (2)") == b"third\n"
    assert sorted(os.listdir(folder)) == [
        "dup (2).txt", "dup (3).txt", "dup.txt", "noext", "noext (2)"]

    # A long name is cut to fit its suffix, not inside a character.
    long = "\u00e9" * 125 + ".txt"  # 254 bytes
    d = upload(srv, user, chat.id, b"long\n", long, "text/plain")
    assert d["filename"] == long
    for _ in range(2):
        sent = chat.send("long", attachments=[d["id"]])
        assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    assert content(long) == b"long\n"
    assert content("\u00e9" * 123 + " (2).txt") == b"long\n"


def test_bad_attachments_are_422_and_store_nothing(srv, model, user):
    chat = Chat(srv, user)
    other_chat = Chat(srv, user)
    mine = upload(srv, user, chat.id, b"x", "x.txt")
    elsewhere = upload(srv, user, other_chat.id, b"y", "y.txt")
    stranger = register(srv)
    theirs_chat = Chat(srv, stranger)
    theirs = upload(srv, stranger, theirs_chat.id, b"z", "z.txt")
    unknown = "0190a0a0-0000-7000-8000-000000000000"
    cases = [
        ([elsewhere["id"]], "attachments[0]"),
        ([mine["id"], theirs["id"]], "attachments[1]"),
        ([unknown], "attachments[0]"),
        ("not a list", "attachments"),
        ({"id": mine["id"]}, "attachments"),
        ([7], "attachments[0]"),
        (["not-a-uuid"], "attachments[0]"),
        ([mine["id"], mine["id"].upper()], "attachments[1]"),
        ([mine["id"]] * 21, "attachments"),
    ]
    for value, field in cases:
        r = srv.post(f"/chats/{chat.id}/messages", token=user.access,
                     json={"content": "hi", "attachments": value})
        body = assert_problem(r, 422, "validation_failed")
        assert body["detail"].startswith(field), (value, body)
    assert messages(srv, user, chat.id) == []

    # Another user's chat is 404, whatever the attachments.
    r = srv.post(f"/chats/{theirs_chat.id}/messages", token=user.access,
                 json={"content": "hi", "attachments": [mine["id"]]})
    assert_problem(r, 404, "not_found")
    r = srv.post(f"/chats/{theirs_chat.id}/messages", token=user.access,
                 json={"content": "hi", "attachments": [theirs["id"]]})
    assert_problem(r, 404, "not_found")
    assert messages(srv, stranger, theirs_chat.id) == []

    # An empty list and null are no attachments.
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    for value in ([], None):
        sent = chat.send("plain", attachments=value)
        assert sent["message"]["attachments"] == []
        chat.wait_reply(sent["reply"]["id"])


def test_retry_carries_the_attachments(srv, model, user):
    model.scenario([
        {"match": {"user_text_contains": "fail once"}, "times": 1,
         "reply": {"error": {"status": 500, "message": "scripted failure"}}},
        {"match": {"user_text_contains": "fail once"},
         "reply": {"blocks": [{"type": "text", "text": "second try"}]}},
    ])
    chat = Chat(srv, user)
    a = upload(srv, user, chat.id, b"carried\n", "carry.txt", "text/plain")
    sent = chat.send("fail once", attachments=[a["id"]])
    first = chat.wait_reply(sent["reply"]["id"])
    assert first["status"] == "failed", first

    r = srv.post(f"/chats/{chat.id}/messages/{first['id']}/retry",
                 token=user.access)
    assert r.status_code == 202, r.text
    again = r.json()
    assert again["message"]["attachments"] == [a]
    reply = chat.wait_reply(again["reply"]["id"])
    assert reply["status"] == "completed" and reply_text(reply) == \
        "second try", reply
    folder = os.path.join(chat.workspace(), "attachments")
    assert sorted(os.listdir(folder)) == ["carry (2).txt", "carry.txt"]
    recs = requests_with(model, "fail once")
    assert any("/workspace/attachments/carry (2).txt" in b.get("text", "")
               for b in last_user_content(recs[-1])), recs[-1]

    # Once the attachment is gone, a retry is refused and stores nothing.
    count = len(messages(srv, user, chat.id))
    assert srv.delete(f"/chats/{chat.id}/attachments/{a['id']}",
                      token=user.access).status_code == 204
    r = srv.post(f"/chats/{chat.id}/messages/{first['id']}/retry",
                 token=user.access)
    assert_problem(r, 409, "attachment_deleted")
    assert len(messages(srv, user, chat.id)) == count


def test_delete_in_use_is_409(srv, model, user):
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "slow"}],
                               "first_delay_ms": 1500}}])
    chat = Chat(srv, user)
    a = upload(srv, user, chat.id, b"a", "a.txt")
    b = upload(srv, user, chat.id, b"b", "b.txt")
    free = upload(srv, user, chat.id, b"c", "c.txt")
    running = chat.send("first", attachments=[a["id"]])
    queued = chat.send("second", attachments=[b["id"]])
    for att in (a, b):  # one running (or still queued), one queued
        r = srv.delete(f"/chats/{chat.id}/attachments/{att['id']}",
                       token=user.access)
        assert_problem(r, 409, "attachment_in_use")
    r = srv.delete(f"/chats/{chat.id}/attachments/{free['id']}",
                   token=user.access)
    assert r.status_code == 204, r.text
    for sent in (running, queued):
        assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
    for att in (a, b):  # done: free to go, and GET says so
        r = srv.delete(f"/chats/{chat.id}/attachments/{att['id']}",
                       token=user.access)
        assert r.status_code == 204, r.text
        r = srv.get(f"/chats/{chat.id}/attachments/{att['id']}",
                    token=user.access)
        assert_problem(r, 404, "not_found")


def test_copy_failure_fails_the_run(srv, model, user):
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    chat = Chat(srv, user)
    lost = upload(srv, user, chat.id, b"bytes that go missing\n", "lost.txt")
    sha = lost["sha256"]
    os.remove(os.path.join(srv.data_dir, "attachments", sha[:2], sha))
    sent = chat.send("copy it", attachments=[lost["id"]])
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["status"] == "failed", reply
    assert reply["error"]["code"] == "sandbox_failed", reply
    assert "lost.txt" in reply["error"]["detail"], reply
    assert not requests_with(model, "copy it")

    # attachments/ taken by a file: the run fails and says why.
    chat = Chat(srv, user)
    r = srv.request("PUT", f"/chats/{chat.id}/files/content?path="
                    "attachments", token=user.access, data=b"in the way")
    assert r.status_code == 204, r.text
    ok = upload(srv, user, chat.id, b"fine\n", "fine.txt")
    sent = chat.send("copy that", attachments=[ok["id"]])
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["error"]["code"] == "sandbox_failed", reply
    assert "attachments/" in reply["error"]["detail"], reply

    # Without attachments the chat goes on.
    sent = chat.send("no files")
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"


def test_interrupt_while_preparing(srv, model, user):
    """An interrupt that lands while the files are copied or encoded (or
    just after) cancels the run; the chat goes on."""
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}],
                               "first_delay_ms": 2000}}])
    chat = Chat(srv, user)
    files = [upload(srv, user, chat.id, noise_png(600), f"n{i}.png")
             for i in range(4)]
    sent = chat.send("stop me", attachments=[f["id"] for f in files])
    r = srv.post(f"/chats/{chat.id}/interrupt", json={}, token=user.access)
    assert r.status_code == 202, r.text
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "cancelled"
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    sent = chat.send("and now", attachments=[files[0]["id"]])
    assert chat.wait_reply(sent["reply"]["id"])["status"] == "completed"
