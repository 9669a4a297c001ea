"""Checkpoints and restore (issue 5): the real CLI in its sandbox changes
files through Bash and Write tool calls in permission_mode auto; every
completed turn leaves a checkpoint; a restore brings the workspace back
byte for byte and the conversation back to that turn."""

import hashlib
import os
import stat
import time

import pytest

from conftest import _TEST_SERVERS, assert_problem, register, serve
from pipeline_util import Chat, finished, model, pipeline_env, types


@pytest.fixture(scope="module")
def pipe(cluster, logdir, model):
    yield from serve(cluster, logdir, "ckpt", pipeline_env(model))


@pytest.fixture
def retention_pipe(cluster, logdir, model):
    yield from serve(cluster, logdir, "ckpt-retention", pipeline_env(
        model, CORRAL_CHECKPOINT_RETENTION="2"))


@pytest.fixture
def user(pipe):
    _TEST_SERVERS.append(pipe)
    return register(pipe)


def bash(command):
    return {"type": "tool_use", "name": "Bash",
            "input": {"command": command, "description": "change files"}}


def tree_state(root):
    """Every entry beneath root: type, permission bits, and the content's
    sha256 or the symlink's target. Equal states: byte-identical trees."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", mode)
            else:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                state[rel] = ("file", mode, digest)
    return state


def turn(chat, text):
    sent = chat.send(text)
    reply = chat.wait_reply(sent["reply"]["id"])
    assert reply["status"] == "completed", reply
    return sent


def checkpoints(chat, token=None, **params):
    r = chat.srv.get(f"/chats/{chat.id}/checkpoints",
                     token=token or chat.user.access, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def wait_done(chat, sent):
    """The reply's run reached `done` (after its checkpoint)."""
    sse = chat.stream(after=sent["last_event_id"])
    evs = sse.until(finished(sent["reply"]["id"]), timeout=90)
    sse.close()
    return evs


def three_turns(model):
    model.scenario([
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "Done."}]}},
        {"match": {"user_text_contains": "step one"},
         "reply": {"blocks": [
             {"type": "tool_use", "name": "Write",
              "input": {"file_path": "{{cwd}}/notes.md",
                        "content": "# Notes\nfirst\n"}},
             bash("mkdir -p d/empty && printf one > d/one.txt && "
                  "chmod 640 d/one.txt && ln -s notes.md link && "
                  "head -c 1500000 /dev/urandom > big.bin")]}},
        {"match": {"user_text_contains": "step two"},
         "reply": {"blocks": [bash(
             "printf changed > d/one.txt && printf new > two.txt && "
             "rm -r d/empty")]}},
        {"match": {"user_text_contains": "step three"},
         "reply": {"blocks": [bash("rm notes.md && printf x > three.txt")]}},
        {"match": {"user_text_contains": "what do you remember"},
         "reply": {"echo": True}},
    ])


def test_three_turns_restore_to_first(pipe, model, user):
    three_turns(model)
    chat = Chat(pipe, user, permission_mode="auto")
    one = turn(chat, "step one")
    evs = wait_done(chat, one)
    seen = types(evs)
    assert "checkpoint" in seen, seen
    cp_ev = next(e for e in evs if e["event"] == "checkpoint")
    assert cp_ev["data"]["message_id"] == one["reply"]["id"]
    # FINALIZE publishes completed with phase checkpoint, then done.
    phases = [e["data"].get("phase") for e in evs
              if e["event"] == "message_status"
              and e["data"]["message_id"] == one["reply"]["id"]]
    assert phases[-2:] == ["checkpoint", "done"], phases
    ws = chat.workspace()
    after_one = tree_state(ws)
    assert after_one["d/one.txt"][1] == 0o640
    assert after_one["link"] == ("link", "notes.md")
    assert after_one["d/empty"][0] == "dir"

    two = turn(chat, "step two")
    wait_done(chat, two)
    three = turn(chat, "step three")
    wait_done(chat, three)
    assert not os.path.exists(os.path.join(ws, "notes.md"))

    listed = checkpoints(chat)
    items = listed["items"]
    assert listed["next_cursor"] is None
    assert [c["message_id"] for c in items] == [
        three["reply"]["id"], two["reply"]["id"], one["reply"]["id"]]
    assert items[2]["id"] == cp_ev["data"]["checkpoint_id"]
    for c in items:
        assert set(c) == {"id", "message_id", "created_at", "files", "bytes"}
    # Incremental: the first stored the 1.5 MB file; the later ones only
    # what changed (a few bytes of files plus the session transcript).
    assert items[2]["bytes"] >= 1500000
    assert items[1]["bytes"] < 300000 and items[0]["bytes"] < 300000
    assert items[2]["files"] >= 3

    page = checkpoints(chat, limit=2)
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = checkpoints(chat, limit=2, cursor=page["next_cursor"])
    assert [c["id"] for c in rest["items"]] == [items[2]["id"]]

    r = pipe.post(f"/chats/{chat.id}/checkpoints/{items[2]['id']}/restore",
                  token=user.access)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == items[2]["id"]
    assert body["reverted"] == 4  # two user messages, two replies
    assert tree_state(ws) == after_one

    msgs = pipe.get(f"/chats/{chat.id}/messages", token=user.access,
                    params={"limit": 50}).json()["items"]
    status = {m["id"]: m["status"] for m in msgs}
    for sent in (two, three):
        assert status[sent["message"]["id"]] == "reverted"
        assert status[sent["reply"]["id"]] == "reverted"
    assert status[one["reply"]["id"]] == "completed"
    assert status[one["message"]["id"]] != "reverted"
    # The later checkpoints are gone; the restored one stays.
    assert [c["id"] for c in checkpoints(chat)["items"]] == [items[2]["id"]]

    # The conversation continues from turn one: --resume of the restored
    # transcript sends only the kept turns.
    four = chat.send("what do you remember")
    reply = chat.wait_reply(four["reply"]["id"])
    assert reply["status"] == "completed", reply
    text = reply["content"][-1]["text"]
    assert "step one" in text and "what do you remember" in text, text
    assert "step two" not in text and "step three" not in text, text
    wait_done(chat, four)
    assert [c["message_id"] for c in checkpoints(chat)["items"]][0] == \
        four["reply"]["id"]


def test_restore_refused_while_running(pipe, model, user):
    model.scenario([
        {"match": {"user_text_contains": "quick"},
         "reply": {"blocks": [{"type": "text", "text": "ok"}]}},
        {"match": {"user_text_contains": "slow"},
         "reply": {"blocks": [{"type": "text", "text": "slowly"}],
                   "first_delay_ms": 3000}},
    ])
    chat = Chat(pipe, user)
    first = turn(chat, "quick")
    wait_done(chat, first)
    cid = checkpoints(chat)["items"][0]["id"]
    slow = chat.send("slow")
    r = pipe.post(f"/chats/{chat.id}/checkpoints/{cid}/restore",
                  token=user.access)
    assert_problem(r, 409, "run_active")
    reply = chat.wait_reply(slow["reply"]["id"])
    assert reply["status"] == "completed"  # nothing was reverted
    wait_done(chat, slow)
    assert len(checkpoints(chat)["items"]) == 2


def test_checkpoint_not_found_and_other_user(pipe, model, user):
    model.scenario([{"match": {"any": True},
                     "reply": {"blocks": [{"type": "text", "text": "ok"}]}}])
    chat = Chat(pipe, user)
    sent = turn(chat, "hello")
    wait_done(chat, sent)
    cid = checkpoints(chat)["items"][0]["id"]
    other = register(pipe)
    r = pipe.get(f"/chats/{chat.id}/checkpoints", token=other.access)
    assert_problem(r, 404)
    r = pipe.post(f"/chats/{chat.id}/checkpoints/{cid}/restore",
                  token=other.access)
    assert_problem(r, 404)
    # A checkpoint of another chat of the same user is not this chat's.
    chat2 = Chat(pipe, user)
    r = pipe.post(f"/chats/{chat2.id}/checkpoints/{cid}/restore",
                  token=user.access)
    assert_problem(r, 404)
    assert checkpoints(chat2)["items"] == []
    for bad in ("nope", "00000000-0000-0000-0000-000000000000"):
        r = pipe.post(f"/chats/{chat.id}/checkpoints/{bad}/restore",
                      token=user.access)
        assert_problem(r, 404)
        r = pipe.get(f"/chats/{bad}/checkpoints", token=user.access)
        assert_problem(r, 404)
    r = pipe.get(f"/chats/{chat.id}/checkpoints", token=user.access,
                 params={"limit": "0"})
    assert_problem(r, 400)
    r = pipe.get(f"/chats/{chat.id}/checkpoints", token=user.access,
                 params={"cursor": "%%%"})
    assert_problem(r, 400)
    r = pipe.get(f"/chats/{chat.id}/checkpoints")
    assert_problem(r, 401)
    # Nothing changed by the refused calls.
    assert [c["id"] for c in checkpoints(chat)["items"]] == [cid]
    assert chat.message(sent["reply"]["id"])["status"] == "completed"


def test_retention(retention_pipe, model):
    srv = retention_pipe
    _TEST_SERVERS.append(srv)
    model.scenario([
        {"match": {"tool_result": True},
         "reply": {"blocks": [{"type": "text", "text": "Done."}]}},
        {"match": {"user_text_contains": "file"},
         "reply": {"blocks": [bash(
             "head -c 200000 /dev/urandom > f.bin")]}},
    ])
    u = register(srv)
    chat = Chat(srv, u, permission_mode="auto")
    store = os.path.join(srv.data_dir, "checkpoints", chat.id)
    f_bin = os.path.join(chat.workspace(), "f.bin")
    shas = []
    sent = []
    for i in range(3):
        sent.append(turn(chat, f"file {i}"))
        wait_done(chat, sent[-1])
        with open(f_bin, "rb") as f:
            shas.append(hashlib.sha256(f.read()).hexdigest())
    items = checkpoints(chat)["items"]
    assert [c["message_id"] for c in items] == [
        sent[2]["reply"]["id"], sent[1]["reply"]["id"]]
    manifests = sorted(os.listdir(os.path.join(store, "manifests")))
    assert manifests == sorted(c["id"] for c in items)

    def blob(sha):
        return os.path.join(store, "blobs", sha[:2], sha)
    # The first turn's file is referenced by no kept checkpoint.
    assert not os.path.exists(blob(shas[0]))
    assert os.path.getsize(blob(shas[1])) == 200000
    assert os.path.getsize(blob(shas[2])) == 200000
    # Deleting the chat removes its store.
    r = srv.delete(f"/chats/{chat.id}", token=u.access)
    assert r.status_code == 204, r.text
    deadline = time.time() + 10
    while os.path.exists(store) and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(store)
