"""The reference Python shape, as a benchmark baseline (bench/README.md).

The stack corral replaces, reduced to what the benchmarks touch: FastAPI on
uvicorn, SSE over Redis Streams with one XREAD BLOCK loop per connection,
a publisher that XADDs, and a bearer-authenticated chat list read from
PostgreSQL (asyncpg). Only Debian's packages are used. Started by
bench/baselines/fastapi, configured from the environment:

    BASELINE_REDIS_URL   redis://[:password@]host:port/db
    BASELINE_PG_DSN      postgresql://user:password@host:port/db

Seeding (tables in the schema `baseline`, so it may share corral's database):

    python3 fastapi_app.py seed PG_DSN N_USERS N_CHATS   # prints the tokens
"""

import asyncio
import hashlib
import os
import re
import secrets
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import asyncpg
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

# Stream ids as Redis writes them: <ms>-<seq>.
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}\Z")
HEARTBEAT_MS = 15000  # an idle stream's `: ping`, as corrald's sse_heartbeat_s
STREAM_MAXLEN = 1000  # XADD MAXLEN ~: the resume window
PAGE = 50  # chats per page, corral's default limit

# A timestamp as corral's API writes it.
TS = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

TOKEN_SQL = (
    "SELECT u.id FROM baseline.tokens t JOIN baseline.users u"
    " ON u.id = t.user_id WHERE t.token_hash = $1 AND NOT u.disabled"
)

# Corral's list order and index (schema/0002_chats.sql), first page; the
# columns of its chat object (API.md "Chats").
LIST_SQL = (
    "SELECT c.id::text AS id, c.title, c.model, c.permission_mode,"
    " c.system_prompt_append, c.pinned, c.archived, 'idle' AS status, "
    + TS.format("c.created_at") + " AS created_at, "
    + TS.format("c.updated_at") + " AS updated_at, "
    + TS.format("c.last_activity_at") + " AS last_activity_at,"
    " c.sandbox_state"
    " FROM baseline.chats c WHERE c.owner_id = $1 AND c.deleted_at IS NULL"
    " AND NOT c.archived"
    " ORDER BY c.pinned DESC, c.last_activity_at DESC, c.id DESC LIMIT $2"
)

SCHEMA_SQL = """
DROP SCHEMA IF EXISTS baseline CASCADE;
CREATE SCHEMA baseline;
CREATE TABLE baseline.users (
    id       uuid PRIMARY KEY,
    name     text NOT NULL,
    disabled boolean NOT NULL DEFAULT false
);
CREATE TABLE baseline.tokens (
    token_hash text PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES baseline.users(id) ON DELETE CASCADE
);
CREATE TABLE baseline.chats (
    id               uuid PRIMARY KEY,
    owner_id         uuid NOT NULL REFERENCES baseline.users(id) ON DELETE CASCADE,
    title            text NOT NULL DEFAULT '',
    model            text NOT NULL,
    permission_mode  text NOT NULL DEFAULT 'ask',
    system_prompt_append text NOT NULL DEFAULT '',
    pinned           boolean NOT NULL DEFAULT false,
    archived         boolean NOT NULL DEFAULT false,
    deleted_at       timestamptz,
    sandbox_state    text NOT NULL DEFAULT 'none',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_owner_order ON baseline.chats
    (owner_id, archived, pinned DESC, last_activity_at DESC, id DESC)
    WHERE deleted_at IS NULL;
"""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ------------------------------------------------------------------ seed


async def seed(dsn: str, n_users: int, n_chats: int) -> List[str]:
    """Recreates the schema; N users, each with a token and N_CHATS chats
    (every tenth pinned, one an hour apart). Returns the tokens."""
    now = datetime.now(timezone.utc)
    users, tokens, chats, plain = [], [], [], []
    for u in range(n_users):
        uid = uuid.uuid4()
        token = "blt_" + secrets.token_hex(24)
        plain.append(token)
        users.append((uid, f"user{u}", False))
        tokens.append((token_hash(token), uid))
        for c in range(n_chats):
            at = now - timedelta(hours=c)
            chats.append((uuid.uuid4(), uid, f"Chat {c}", "claude-sonnet-4-5",
                          "ask", "", c % 10 == 0, False, None, "stopped",
                          at, at, at))
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(SCHEMA_SQL)
            await conn.copy_records_to_table(
                "users", schema_name="baseline", records=users)
            await conn.copy_records_to_table(
                "tokens", schema_name="baseline", records=tokens)
            await conn.copy_records_to_table(
                "chats", schema_name="baseline", records=chats)
        await conn.execute("ANALYZE baseline.users, baseline.tokens,"
                           " baseline.chats")
    finally:
        await conn.close()
    return plain


def seed_main(argv: List[str]) -> int:
    if len(argv) != 3 or not argv[1].isdigit() or not argv[2].isdigit():
        print("usage: fastapi_app.py seed PG_DSN N_USERS N_CHATS",
              file=sys.stderr)
        return 2
    for token in asyncio.run(seed(argv[0], int(argv[1]), int(argv[2]))):
        print(token)
    return 0


# ------------------------------------------------------------------- app

app = FastAPI()


class Sandbox(BaseModel):
    provider: str
    state: str


class Chat(BaseModel):
    id: str
    title: str
    model: str
    permission_mode: str
    system_prompt_append: str
    pinned: bool
    archived: bool
    status: str
    created_at: str
    updated_at: str
    last_activity_at: str
    sandbox: Sandbox


class ChatList(BaseModel):
    items: List[Chat]
    next_cursor: Optional[str] = None


@app.on_event("startup")
async def startup() -> None:
    # One pool each; a blocked XREAD holds its Redis connection, so the
    # Redis pool grows to one connection per open stream.
    app.state.redis = aioredis.from_url(os.environ["BASELINE_REDIS_URL"])
    await app.state.redis.ping()
    app.state.pg = await asyncpg.create_pool(
        os.environ["BASELINE_PG_DSN"], min_size=10, max_size=10)


@app.on_event("shutdown")
async def shutdown() -> None:
    await app.state.pg.close()
    await app.state.redis.close()


@app.get("/healthz", response_class=PlainTextResponse)
async def healthz() -> str:
    return "ok\n"


def sse_frame(entry_id: bytes, body: bytes) -> bytes:
    data = b"".join(b"data: " + line + b"\n" for line in body.split(b"\n"))
    return b"id: " + entry_id + b"\n" + data + b"\n"


async def stream_tail(r, key: str) -> bytes:
    """The id of the stream's newest entry (0-0 when empty): a live-only
    stream reads after it. XREAD from `$` would lose what is added between
    one XREAD's timeout and the next."""
    last = await r.xrevrange(key, count=1)
    return last[0][0] if last else b"0-0"


async def events(r, key: str, last: bytes):
    # The first XREAD returns at once what is after `last` (the replay of
    # a resume), later ones block until something new or the heartbeat.
    while True:
        reply = await r.xread({key: last}, block=HEARTBEAT_MS)
        if not reply:
            yield b": ping\n\n"
            continue
        out = []
        for entry_id, fields in reply[0][1]:
            last = entry_id
            out.append(sse_frame(entry_id, fields.get(b"body", b"")))
        yield b"".join(out)


@app.get("/chats/{chan}/stream")
async def stream(chan: str, last_event_id: Optional[str] = Header(None)):
    if last_event_id is not None and not STREAM_ID.match(last_event_id):
        raise HTTPException(400, "Last-Event-ID: not a stream id")
    r = app.state.redis
    key = "chat:" + chan
    last = last_event_id.encode() if last_event_id else await stream_tail(r, key)
    return StreamingResponse(
        events(r, key, last), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"})


@app.post("/chats/{chan}/events", status_code=202)
async def publish(chan: str, request: Request):
    body = await request.body()
    entry_id = await app.state.redis.xadd(
        "chat:" + chan, {"body": body}, maxlen=STREAM_MAXLEN, approximate=True)
    return {"id": entry_id.decode()}


async def current_user(authorization: Optional[str] = Header(None)) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token")
    async with app.state.pg.acquire() as conn:
        user_id = await conn.fetchval(TOKEN_SQL, token_hash(token))
    if user_id is None:
        raise HTTPException(401, "invalid token")
    return user_id


@app.get("/api/v1/chats", response_model=ChatList)
async def list_chats(user_id=Depends(current_user)):
    async with app.state.pg.acquire() as conn:
        rows = await conn.fetch(LIST_SQL, user_id, PAGE)
    items = []
    for row in rows:
        chat = dict(row)
        chat["sandbox"] = {"provider": "local",
                           "state": chat.pop("sandbox_state")}
        items.append(chat)
    return {"items": items, "next_cursor": None}


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "seed":
        print("usage: fastapi_app.py seed PG_DSN N_USERS N_CHATS"
              " (the app runs under uvicorn: bench/baselines/fastapi)",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(seed_main(sys.argv[2:]))
