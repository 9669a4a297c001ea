-- Tool approvals, user settings, model prices and the usage ledger
-- (API.md "Permissions", "Settings, usage, models", "Admin").

-- Per-user settings. env_enc maps each variable name to its value sealed
-- with AES-256-GCM under the server key (base64 of nonce | ciphertext |
-- tag, the user id and the name as associated data): write-only in the API.
CREATE TABLE user_settings (
    user_id                uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    default_model          text,
    permission_mode        text CHECK (permission_mode IN ('ask', 'auto', 'plan')),
    system_prompt_append   text NOT NULL DEFAULT '',
    env_enc                json NOT NULL DEFAULT '{}',
    mcp_servers            json NOT NULL DEFAULT '{}',
    allowed_tools          json NOT NULL DEFAULT '[]',
    disallowed_tools       json NOT NULL DEFAULT '[]',
    allow_background_tools boolean NOT NULL DEFAULT false,
    monthly_budget_usd     numeric(12, 4) CHECK (monthly_budget_usd >= 0),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- The models offered and their prices in USD per million tokens. Costs
-- are computed from this table when a turn ends (admins edit it).
CREATE TABLE models (
    id                 text PRIMARY KEY,
    display_name       text NOT NULL,
    enabled            boolean NOT NULL DEFAULT true,
    price_input        numeric(12, 6) NOT NULL CHECK (price_input >= 0),
    price_output       numeric(12, 6) NOT NULL CHECK (price_output >= 0),
    price_cache_write  numeric(12, 6) NOT NULL CHECK (price_cache_write >= 0),
    price_cache_read   numeric(12, 6) NOT NULL CHECK (price_cache_read >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- Anthropic's published list prices (cache write = 5-minute writes).
INSERT INTO models (id, display_name, price_input, price_output,
                    price_cache_write, price_cache_read) VALUES
    ('claude-opus-4-5', 'Claude Opus 4.5', 5, 25, 6.25, 0.50),
    ('claude-sonnet-4-5', 'Claude Sonnet 4.5', 3, 15, 3.75, 0.30),
    ('claude-haiku-4-5', 'Claude Haiku 4.5', 1, 5, 1.25, 0.10),
    ('claude-opus-4-1', 'Claude Opus 4.1', 15, 75, 18.75, 1.50),
    ('claude-sonnet-4', 'Claude Sonnet 4', 3, 15, 3.75, 0.30);

-- Every can_use_tool request of the CLI, with its decision and who made
-- it (the audit record).
CREATE TABLE permission_requests (
    id             uuid PRIMARY KEY,
    chat_id        uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    message_id     uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    tool_use_id    text,
    tool_name      text NOT NULL,
    input          json NOT NULL,
    suggestions    json NOT NULL DEFAULT '[]',
    status         text NOT NULL CHECK (status IN ('pending', 'resolved')),
    decision       text CHECK (decision IN ('allow', 'deny')),
    reason         text CHECK (reason IN ('user', 'rule', 'auto', 'timeout',
                                          'interrupt', 'cli_cancelled')),
    decided_by     uuid REFERENCES users(id) ON DELETE SET NULL,
    deny_message   text,
    updated_input  json,
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    decided_at     timestamptz,
    CHECK ((status = 'pending') = (decision IS NULL))
);
CREATE INDEX permission_requests_chat ON permission_requests (chat_id, created_at, id);
CREATE INDEX permission_requests_pending ON permission_requests (chat_id)
    WHERE status = 'pending';

-- Rules stored with `remember`: content NULL matches every use of the tool.
CREATE TABLE permission_rules (
    id          uuid PRIMARY KEY,
    chat_id     uuid NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    tool_name   text NOT NULL,
    content     text,
    behavior    text NOT NULL CHECK (behavior IN ('allow', 'deny')),
    created_by  uuid REFERENCES users(id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX permission_rules_chat ON permission_rules (chat_id, created_at, id);

-- One row per model per turn. Kept when a chat is deleted (chats are
-- soft-deleted), so totals per user never shrink.
CREATE TABLE usage_ledger (
    id                           bigserial PRIMARY KEY,
    user_id                      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    chat_id                      uuid NOT NULL,
    message_id                   uuid NOT NULL,
    model                        text NOT NULL,
    input_tokens                 bigint NOT NULL,
    output_tokens                bigint NOT NULL,
    cache_creation_input_tokens  bigint NOT NULL,
    cache_read_input_tokens      bigint NOT NULL,
    cost_usd                     numeric(14, 6) NOT NULL,
    created_at                   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX usage_ledger_user_time ON usage_ledger (user_id, created_at);

-- The price row of a model: its exact id, or the longest id that is a
-- prefix of a dated name (claude-sonnet-4-5 prices
-- claude-sonnet-4-5-20250929). No row: the model has no price (cost 0).
CREATE FUNCTION model_price(model text) RETURNS SETOF models
LANGUAGE sql STABLE AS $$
    SELECT * FROM models
    WHERE $1 = id OR $1 LIKE replace(replace(id, '_', '\_'), '%', '\%') || '-%'
    ORDER BY length(id) DESC LIMIT 1
$$;

-- A user's monthly budget: the lower of their own value and the admin's
-- cap (NULL: no budget), and what the ledger holds for the current
-- calendar month (UTC).
CREATE FUNCTION budget_state(uid uuid,
                             OUT limit_usd numeric, OUT spent_usd numeric)
LANGUAGE sql STABLE AS $$
    -- least() skips NULLs: one limit set is the limit, none is NULL.
    SELECT (SELECT least(s.monthly_budget_usd, u.monthly_budget_cap_usd)
              FROM users u LEFT JOIN user_settings s ON s.user_id = u.id
             WHERE u.id = $1),
           (SELECT COALESCE(sum(cost_usd), 0) FROM usage_ledger
             WHERE user_id = $1 AND created_at >=
                   date_trunc('month', now() AT TIME ZONE 'UTC')
                   AT TIME ZONE 'UTC')
$$;
