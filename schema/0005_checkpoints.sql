-- Checkpoints (issue 5): one row per snapshot of a chat's workspace and
-- CLI session, taken after a completed turn. The contents live on disk
-- (<data_dir>/checkpoints/<chat_id>/, docs/notes.md); the row is what the
-- API lists. bytes: bytes newly stored by this checkpoint (incremental);
-- bytes_total: the size of all files it covers.

CREATE TABLE checkpoints (
    id          uuid PRIMARY KEY,
    chat_id     uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    message_id  uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    files       bigint NOT NULL CHECK (files >= 0),
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    bytes_total bigint NOT NULL CHECK (bytes_total >= 0),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX checkpoints_chat_order ON checkpoints (chat_id, created_at DESC, id DESC);
