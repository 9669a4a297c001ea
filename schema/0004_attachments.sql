-- Attachments (API.md "Files"): the bytes live content-addressed under
-- <data_dir>/attachments/<sha256[0:2]>/<sha256>, one blob for equal bytes
-- whoever uploads them; a row per upload holds what the client sees.
CREATE TABLE attachments (
    id           uuid PRIMARY KEY,
    chat_id      uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    filename     text NOT NULL,
    content_type text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX attachments_chat_order ON attachments (chat_id, created_at DESC, id DESC);
CREATE INDEX attachments_sha ON attachments (sha256);
