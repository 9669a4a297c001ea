-- Chats, messages, the durable per-chat event log and runs (the core
-- pipeline). Every query on them is scoped by the chat's owner.

CREATE TABLE chats (
    id                   uuid PRIMARY KEY,
    owner_id             uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title                text NOT NULL DEFAULT '',
    model                text NOT NULL,
    permission_mode      text NOT NULL DEFAULT 'ask'
                         CHECK (permission_mode IN ('ask', 'auto', 'plan')),
    system_prompt_append text NOT NULL DEFAULT '',
    pinned               boolean NOT NULL DEFAULT false,
    archived             boolean NOT NULL DEFAULT false,
    deleted_at           timestamptz,
    -- The CLI session id corral chooses (--session-id, then --resume).
    session_id           uuid NOT NULL,
    -- true once the CLI wrote a transcript for the session (a CLI that
    -- never received a message writes none, and --resume of it fails).
    session_started      boolean NOT NULL DEFAULT false,
    -- true once the prompt was edited: later launches pass
    -- --system-prompt-snapshot off.
    prompt_edited        boolean NOT NULL DEFAULT false,
    sandbox_state        text NOT NULL DEFAULT 'none'
                         CHECK (sandbox_state IN ('none', 'starting', 'running', 'stopped', 'error')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    last_activity_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_owner_order ON chats
    (owner_id, archived, pinned DESC, last_activity_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE messages (
    id           uuid PRIMARY KEY,
    chat_id      uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('user', 'assistant')),
    origin       text NOT NULL DEFAULT 'user' CHECK (origin IN ('user', 'task')),
    reply_to     uuid REFERENCES messages(id) ON DELETE SET NULL,
    status       text NOT NULL CHECK (status IN ('queued', 'running',
                 'awaiting_permission', 'completed', 'failed', 'cancelled', 'reverted')),
    -- user: a JSON string, the text sent; assistant: a JSON array of
    -- blocks (API.md Message). Served verbatim as the message's content.
    content      json NOT NULL,
    attachments  json NOT NULL DEFAULT '[]',
    model        text,
    -- run options of a user message: permission_mode, max_thinking_tokens
    options      json NOT NULL DEFAULT '{}',
    usage        json NOT NULL DEFAULT '[]',
    cost_usd     numeric(14, 6) NOT NULL DEFAULT 0,
    error        json,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at   timestamptz,
    completed_at timestamptz
);
CREATE INDEX messages_chat_order ON messages (chat_id, created_at, id);

-- The durable per-chat event log: seq 1, 2, 3 ... per chat, no gaps.
-- payload is json (not jsonb) so replay returns the bytes that went live.
CREATE TABLE events (
    chat_id    uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    type       text NOT NULL,
    payload    json NOT NULL,
    message_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, seq)
);

-- One row per turn: the queue and the phase machine's record.
CREATE TABLE runs (
    id               uuid PRIMARY KEY,
    chat_id          uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    user_message_id  uuid REFERENCES messages(id) ON DELETE CASCADE,
    reply_message_id uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    phase            text NOT NULL,
    lease_owner      text,
    heartbeat_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at       timestamptz,
    ended_at         timestamptz
);
CREATE INDEX runs_chat_open ON runs (chat_id, created_at)
    WHERE phase NOT IN ('done', 'failed', 'cancelled');
