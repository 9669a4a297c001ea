"""Attachments and the workspace files API (API.md "Files"): streamed
uploads (multipart and raw), content addressing, size limits, sniffing,
list/get/delete, and the workspace list/download/upload/mkdir/delete/
archive with every path traversal variant refused."""

import hashlib
import io
import os
import socket
import tarfile

import pytest
import requests

from conftest import assert_problem, register

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00"
       b"\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc"
       b"\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00"
       b"\x00IEND\xaeB`\x82")


def new_chat(srv, user):
    r = srv.post("/chats", json={}, token=user.access)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def upload(srv, user, chat, data, name="a.txt", ctype="text/plain"):
    return srv.post(f"/chats/{chat}/attachments", token=user.access,
                    files={"file": (name, data, ctype)})


def blobs(srv):
    root = os.path.join(srv.data_dir, "attachments")
    found = []
    for d, _, files in os.walk(root):
        found.extend(os.path.join(d, f) for f in files)
    return found


def raw_request(srv, head, body_chunks):
    """Sends a hand-made request (chunked bodies) and returns the status
    line and the response."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(head)
        for c in body_chunks:
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = b""
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
            if b"\r\n\r\n" in data and b"}" in data:
                break
        return data
    finally:
        s.close()


@pytest.fixture
def files_srv(make_server):
    return make_server(env={"CORRAL_ATTACHMENT_MAX_BYTES": str(64 * 1024),
                            "CORRAL_WORKSPACE_PUT_MAX_BYTES":
                                str(8 << 20)})


# ------------------------------------------------------------ attachments

def test_upload_multipart_raw_and_dedupe(files_srv):
    srv = files_srv
    user = register(srv)
    chat = new_chat(srv, user)
    data = b"hello attachment\n" * 100
    r = upload(srv, user, chat, data, name="../../etc/.notes.txt",
               ctype="image/png")
    assert r.status_code == 201, r.text
    a = r.json()
    assert set(a) == {"id", "filename", "content_type", "size", "sha256",
                      "created_at"}
    assert a["filename"] == "notes.txt"
    assert a["content_type"].startswith("text/plain")  # not the client's
    assert a["size"] == len(data)
    assert a["sha256"] == hashlib.sha256(data).hexdigest()
    # The same bytes raw, with ?filename=: one blob for both.
    r = srv.post(f"/chats/{chat}/attachments", token=user.access,
                 params={"filename": "again.txt"}, data=data,
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["sha256"] == a["sha256"] and b["id"] != a["id"]
    assert b["filename"] == "again.txt"
    assert len(blobs(srv)) == 1
    # Download: the bytes, the type, the name.
    r = srv.get(f"/chats/{chat}/attachments/{a['id']}", token=user.access)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "attachment" in r.headers["Content-Disposition"]
    assert "notes.txt" in r.headers["Content-Disposition"]
    # List: newest first, paged.
    r = srv.get(f"/chats/{chat}/attachments", token=user.access,
                params={"limit": 1})
    page = r.json()
    assert [x["id"] for x in page["items"]] == [b["id"]]
    r = srv.get(f"/chats/{chat}/attachments", token=user.access,
                params={"limit": 1, "cursor": page["next_cursor"]})
    assert [x["id"] for x in r.json()["items"]] == [a["id"]]
    assert r.json()["next_cursor"] is None
    # Delete one: the blob stays for the other; delete both: it goes.
    assert srv.delete(f"/chats/{chat}/attachments/{a['id']}",
                      token=user.access).status_code == 204
    assert len(blobs(srv)) == 1
    assert_problem(srv.get(f"/chats/{chat}/attachments/{a['id']}",
                           token=user.access), 404)
    assert srv.delete(f"/chats/{chat}/attachments/{b['id']}",
                      token=user.access).status_code == 204
    assert blobs(srv) == []


@pytest.mark.parametrize("data,want", [
    (PNG, "image/png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    (b"GIF89a\x01\x00\x01\x00", "image/gif"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"%PDF-1.4\n%\xe2\xe3", "application/pdf"),
    (b"PK\x03\x04\x14\x00\x00\x00", "application/zip"),
    (b"\x1f\x8b\x08\x00\x00\x00", "application/gzip"),
    ("grüße\n".encode(), "text/plain; charset=utf-8"),
    (b"\x00\x01\x02binary", "application/octet-stream"),
])
def test_sniffing(server, data, want):
    user = register(server)
    chat = new_chat(server, user)
    # The client claims an image every time: never trusted.
    r = upload(server, user, chat, data, name="x.png", ctype="image/png")
    assert r.status_code == 201, r.text
    assert r.json()["content_type"] == want


def test_limits_and_bad_bodies(files_srv):
    srv = files_srv
    user = register(srv)
    chat = new_chat(srv, user)
    big = b"x" * (64 * 1024 + 1)
    r = upload(srv, user, chat, big)
    assert_problem(r, 413, "body_too_large", request_id=False)
    r = srv.post(f"/chats/{chat}/attachments", token=user.access,
                 params={"filename": "big"}, data=big)
    assert_problem(r, 413, "body_too_large", request_id=False)
    # Chunked: the length is learnt mid-stream.
    head = (f"POST /api/v1/chats/{chat}/attachments?filename=big HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: Bearer {user.access}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"y" * 16384
    body = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 8 + [b"0\r\n\r\n"]
    resp = raw_request(srv, head, body)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    tmp = os.path.join(srv.data_dir, "tmp")
    assert not os.path.isdir(tmp) or os.listdir(tmp) == []
    # Exactly at the limit is fine.
    r = srv.post(f"/chats/{chat}/attachments", token=user.access,
                 params={"filename": "edge"}, data=b"z" * (64 * 1024))
    assert r.status_code == 201, r.text
    # Multipart without the final boundary, or without a `file` part.
    hdr = {"Content-Type": "multipart/form-data; boundary=BND"}
    bad = (b"--BND\r\nContent-Disposition: form-data; name=\"file\"; "
           b"filename=\"a\"\r\n\r\ndata\r\n")
    r = srv.post(f"/chats/{chat}/attachments", token=user.access,
                 data=bad, headers=hdr)
    assert_problem(r, 400, "bad_multipart")
    other = (b"--BND\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n"
             b"data\r\n--BND--\r\n")
    r = srv.post(f"/chats/{chat}/attachments", token=user.access,
                 data=other, headers=hdr)
    assert "file" in assert_problem(r, 422, "validation_failed")["detail"]
    r = srv.post(f"/chats/{chat}/attachments", token=user.access, data=b"x")
    assert "filename" in assert_problem(r, 422)["detail"]
    r = srv.get(f"/chats/{chat}/attachments", token=user.access)
    assert [a["filename"] for a in r.json()["items"]] == ["edge"]
    assert os.listdir(tmp) == []


def test_other_user_gets_404(server):
    owner, other = register(server), register(server)
    chat = new_chat(server, owner)
    a = upload(server, owner, chat, b"mine").json()
    base = f"/chats/{chat}"
    assert_problem(upload(server, other, chat, b"x"), 404)
    assert_problem(server.get(f"{base}/attachments", token=other.access), 404)
    assert_problem(server.get(f"{base}/attachments/{a['id']}",
                              token=other.access), 404)
    assert_problem(server.delete(f"{base}/attachments/{a['id']}",
                                 token=other.access), 404)
    for method, path in [("GET", "/files"), ("GET", "/files/content"),
                         ("PUT", "/files/content"), ("DELETE", "/files"),
                         ("POST", "/files/mkdir"),
                         ("GET", "/files/archive")]:
        r = server.request(method, base + path, token=other.access,
                           params={"path": "x"}, data=b"data")
        assert_problem(r, 404)
    r = server.get(f"{base}/attachments/{a['id']}", token=owner.access)
    assert r.content == b"mine"
    r = server.get(f"{base}/files", token=owner.access)
    assert r.json()["items"] == []


# ------------------------------------------------------------ workspace

def ws_root(srv, chat):
    return os.path.join(srv.data_dir, "sandboxes", chat, "workspace")


def test_workspace_round_trips(files_srv):
    srv = files_srv
    user = register(srv)
    chat = new_chat(srv, user)
    base = f"/chats/{chat}"
    tok = user.access
    # Not created yet: empty.
    r = srv.get(f"{base}/files", token=tok)
    assert r.status_code == 200 and r.json() == {"items": [],
                                                 "next_cursor": None}
    # Over the PUT limit: 413, nothing stored. (First: the answer's
    # lingering close must end before the server stops.)
    r = srv.request("PUT", f"{base}/files/content", token=tok,
                    params={"path": "huge"}, data=b"h" * ((8 << 20) + 1))
    assert_problem(r, 413, request_id=False)
    assert not os.path.exists(os.path.join(ws_root(srv, chat), "huge"))
    big = os.urandom(3 << 20)
    r = srv.request("PUT", f"{base}/files/content", token=tok,
                    params={"path": "src/deep/big.bin"}, data=big)
    assert r.status_code == 204, r.text
    r = srv.request("PUT", f"{base}/files/content", token=tok,
                    params={"path": "a.txt"}, data=b"alpha")
    assert r.status_code == 204, r.text
    r = srv.post(f"{base}/files/mkdir", token=tok,
                 params={"path": "empty/inner"})
    assert r.status_code == 201, r.text
    assert_problem(srv.post(f"{base}/files/mkdir", token=tok,
                            params={"path": "empty/inner"}), 409)
    r = srv.get(f"{base}/files", token=tok)
    items = r.json()["items"]
    assert [(i["name"], i["type"]) for i in items] == [
        ("a.txt", "file"), ("empty", "dir"), ("src", "dir")]
    assert items[0]["size"] == 5 and items[0]["mtime"].endswith("Z")
    r = srv.get(f"{base}/files", token=tok, params={"limit": 2})
    page = r.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    r = srv.get(f"{base}/files", token=tok,
                params={"limit": 2, "cursor": page["next_cursor"]})
    assert [i["name"] for i in r.json()["items"]] == ["src"]
    r = srv.get(f"{base}/files", token=tok, params={"path": "src/deep"})
    assert r.json()["items"][0]["size"] == len(big)
    r = srv.get(f"{base}/files/content", token=tok,
                params={"path": "src/deep/big.bin"}, stream=True)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(big)
    assert r.raw.read() == big
    # Archive of the root and of a subdirectory.
    r = srv.get(f"{base}/files/archive", token=tok)
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as t:
        names = {m.name.lstrip("./") for m in t.getmembers()}
        assert {"a.txt", "src/deep/big.bin", "empty/inner"} <= names
        got = t.extractfile("./src/deep/big.bin").read()
        assert got == big
    r = srv.get(f"{base}/files/archive", token=tok, params={"path": "src"})
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as t:
        assert {m.name.lstrip("./") for m in t.getmembers()} >= {
            "deep", "deep/big.bin"}
    # Delete a file and a tree; never the root.
    assert srv.delete(f"{base}/files", token=tok,
                      params={"path": "a.txt"}).status_code == 204
    assert srv.delete(f"{base}/files", token=tok,
                      params={"path": "src"}).status_code == 204
    assert_problem(srv.delete(f"{base}/files", token=tok,
                              params={"path": "src"}), 404)
    assert_problem(srv.delete(f"{base}/files", token=tok), 422, "bad_path")
    assert_problem(srv.delete(f"{base}/files", token=tok,
                              params={"path": "."}), 422, "bad_path")
    r = srv.get(f"{base}/files", token=tok)
    assert [i["name"] for i in r.json()["items"]] == ["empty"]
    # A directory is not a file, a file is not a directory.
    assert_problem(srv.get(f"{base}/files/content", token=tok,
                           params={"path": "empty"}), 422, "bad_path")
    r = srv.request("PUT", f"{base}/files/content", token=tok,
                    params={"path": "empty"}, data=b"x")
    assert_problem(r, 409)


TRAVERSALS = ["../x", "a/../../x", "/etc/passwd", "a%00b", "%2e%2e/x",
              "a//b", "./a", "link_etc/passwd", "link_out/secret",
              "link_etc", "rel_out"]


def test_traversal_refused(files_srv, tmp_path):
    srv = files_srv
    user = register(srv)
    chat = new_chat(srv, user)
    base = f"/chats/{chat}"
    tok = user.access
    r = srv.request("PUT", f"{base}/files/content", token=tok,
                    params={"path": "inside.txt"}, data=b"in")
    assert r.status_code == 204
    root = ws_root(srv, chat)
    outside = os.path.join(srv.data_dir, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("secret")
    os.symlink("/etc", os.path.join(root, "link_etc"))
    os.symlink(outside, os.path.join(root, "link_out"))
    os.symlink("../../../outside/secret", os.path.join(root, "rel_out"))
    os.symlink("inside.txt", os.path.join(root, "link_in"))
    before = sorted(os.listdir(root)), sorted(os.listdir(outside))
    for p in TRAVERSALS:
        q = f"?path={p if '%' in p else requests.utils.quote(p)}"
        for method, path in [("GET", "/files"), ("GET", "/files/content"),
                             ("PUT", "/files/content"),
                             ("POST", "/files/mkdir"),
                             ("GET", "/files/archive")]:
            if p in ("link_etc", "rel_out") and method in ("PUT", "POST"):
                # The name itself is inside: PUT would replace the link,
                # mkdir finds that it exists.
                continue
            r = srv.request(method, f"{base}{path}{q}", token=tok,
                            data=b"evil")
            assert_problem(r, 422, "bad_path")
        if p not in ("link_etc", "rel_out"):
            r = srv.delete(f"{base}/files{q}", token=tok)
            assert_problem(r, 422, "bad_path")
    assert (sorted(os.listdir(root)), sorted(os.listdir(outside))) == before
    assert open(os.path.join(outside, "secret")).read() == "secret"
    # A symlink to a file inside is followed.
    r = srv.get(f"{base}/files/content", token=tok,
                params={"path": "link_in"})
    assert r.status_code == 200 and r.content == b"in"
    # Deleting a link removes the link, never its target.
    assert srv.delete(f"{base}/files", token=tok,
                      params={"path": "link_out"}).status_code == 204
    assert os.path.exists(os.path.join(outside, "secret"))
    r = srv.get(f"{base}/files", token=tok)
    assert {i["name"]: i["type"] for i in r.json()["items"]}["link_etc"] \
        == "symlink"


def head_raw(srv, path, token):
    """A HEAD request on its own connection, read to the close: returns the
    header block and whatever came after it."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(f"HEAD /api/v1{path} HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {token}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while got := s.recv(65536):
            data += got
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode(), rest


def test_head_sends_headers_only(files_srv):
    """HEAD answers what GET would, without a body: JSON routes, streamed
    downloads and the streamed archive."""
    srv = files_srv
    user = register(srv)
    chat = new_chat(srv, user)
    base = f"/chats/{chat}"
    data = b"z" * 70000
    r = srv.request("PUT", f"{base}/files/content", token=user.access,
                    params={"path": "z.bin"}, data=data)
    assert r.status_code == 204, r.text
    got = srv.get(f"/chats/{chat}", token=user.access)
    head, rest = head_raw(srv, f"/chats/{chat}", user.access)
    assert head.startswith("HTTP/1.1 200") and rest == b""
    assert f"content-length: {len(got.content)}" in head.lower()
    head, rest = head_raw(srv, f"{base}/files/content?path=z.bin",
                          user.access)
    assert head.startswith("HTTP/1.1 200") and rest == b""
    assert f"content-length: {len(data)}" in head.lower()
    head, rest = head_raw(srv, f"{base}/files/archive", user.access)
    assert head.startswith("HTTP/1.1 200") and rest == b""
    # The server is still serving, and the file is intact.
    r = srv.get(f"{base}/files/content", token=user.access,
                params={"path": "z.bin"})
    assert r.status_code == 200 and r.content == data


def test_deleting_a_chat_collects_its_blobs(files_srv):
    """A deleted chat's attachments go with it; a blob another chat still
    uses stays."""
    srv = files_srv
    user = register(srv)
    one, two = new_chat(srv, user), new_chat(srv, user)
    shared, own = os.urandom(2048), os.urandom(2048)
    for chat, data in [(one, shared), (two, shared), (one, own)]:
        r = upload(srv, user, chat, data, ctype="application/octet-stream")
        assert r.status_code == 201, r.text
    names = {hashlib.sha256(d).hexdigest() for d in (shared, own)}
    assert names <= {os.path.basename(p) for p in blobs(srv)}
    r = srv.delete(f"/chats/{one}", token=user.access)
    assert r.status_code == 204, r.text
    left = {os.path.basename(p) for p in blobs(srv)}
    assert hashlib.sha256(shared).hexdigest() in left
    assert hashlib.sha256(own).hexdigest() not in left
    assert srv.db.scalar("SELECT count(*) FROM attachments WHERE chat_id"
                         " = %s", (one,)) == 0
    r = srv.get(f"/chats/{two}/attachments", token=user.access)
    assert len(r.json()["items"]) == 1
