/* Mapping of the CLI's stream-json lines to corral's events (see
 * turn_map.h). Blocks are kept structured, not as JSON, because a tool
 * block is completed later by its result. */
#include "corral/turn_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corral/mem.h"

enum block_kind { BLOCK_TEXT, BLOCK_THINKING, BLOCK_TOOL };

struct turn_block {
    enum block_kind kind;
    bool final;          /* the complete assistant line arrived */
    struct buf text;     /* text or thinking */
    char *tool_id, *name, *parent_id;
    struct buf input;    /* tool input, raw JSON */
    struct buf result;   /* tool result content, raw JSON */
    bool has_result, is_error;
};

struct turn_msg {
    char id[72];
    int base; /* corral index of the message's first block */
    int seen; /* blocks delivered by assistant lines so far */
};

void turn_map_init(struct turn_map *t, const char *message_id)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->message_id, sizeof(t->message_id), "%s", message_id);
}

void turn_map_deinit(struct turn_map *t)
{
    for (int i = 0; i < t->nblocks; i++) {
        struct turn_block *b = &t->blocks[i];
        buf_deinit(&b->text);
        buf_deinit(&b->input);
        buf_deinit(&b->result);
        free(b->tool_id);
        free(b->name);
        free(b->parent_id);
    }
    free(t->blocks);
    free(t->msgs);
    memset(t, 0, sizeof(*t));
}

/* ---- small JSON helpers ---- */

static void copy_str(const struct json_doc *d, int tok, char *out, size_t n)
{
    size_t len;
    char *s = json_str_dup(d, tok, &len);
    snprintf(out, n, "%s", s ? s : "");
    free(s);
}

static bool str_is(const struct json_doc *d, int obj, const char *key,
                   const char *v)
{
    return json_str_eq(d, json_get(d, obj, key), v);
}

/* Appends the unescaped string tok to out. */
static void append_str(const struct json_doc *d, int tok, struct buf *out)
{
    size_t len;
    char *s = json_str_dup(d, tok, &len);
    if (s)
        buf_append(out, s, len);
    free(s);
}

static char *dup_or_null(const struct json_doc *d, int tok)
{
    return json_type(d, tok) == JSON_STRING ? json_str_dup(d, tok, NULL)
                                            : NULL;
}

/* ---- blocks ---- */

static struct turn_block *block_at(struct turn_map *t, int idx,
                                   enum block_kind kind)
{
    while (idx >= t->cap_blocks) {
        int cap = t->cap_blocks ? t->cap_blocks * 2 : 8;
        t->blocks = xrealloc(t->blocks, (size_t)cap * sizeof(*t->blocks));
        memset(t->blocks + t->cap_blocks, 0,
               (size_t)(cap - t->cap_blocks) * sizeof(*t->blocks));
        t->cap_blocks = cap;
    }
    for (int i = t->nblocks; i <= idx; i++)
        t->blocks[i].kind = kind;
    if (idx >= t->nblocks)
        t->nblocks = idx + 1;
    return &t->blocks[idx];
}

static struct turn_msg *msg_for(struct turn_map *t, const char *id)
{
    for (int i = 0; i < t->nmsgs; i++)
        if (strcmp(t->msgs[i].id, id) == 0)
            return &t->msgs[i];
    if (t->nmsgs == t->cap_msgs) {
        t->cap_msgs = t->cap_msgs ? t->cap_msgs * 2 : 8;
        t->msgs = xrealloc(t->msgs, (size_t)t->cap_msgs * sizeof(*t->msgs));
    }
    struct turn_msg *m = &t->msgs[t->nmsgs++];
    snprintf(m->id, sizeof(m->id), "%s", id);
    m->base = t->nblocks;
    m->seen = 0;
    return m;
}

static int find_tool(const struct turn_map *t, const char *tool_id)
{
    for (int i = 0; i < t->nblocks; i++)
        if (t->blocks[i].tool_id && strcmp(t->blocks[i].tool_id, tool_id) == 0)
            return i;
    return -1;
}

/* ---- event writers ---- */

/* Writes a string field, cut at the event cap; returns true if cut. */
static bool put_capped(struct json_w *w, const char *key, const char *s,
                       size_t len)
{
    bool cut = len > TURN_MAP_EVENT_CAP;
    json_w_key(w, key);
    json_w_strn(w, s, cut ? TURN_MAP_EVENT_CAP : len);
    return cut;
}

/* Writes raw JSON, or its cut text as a string when over the cap. */
static bool put_raw_capped(struct json_w *w, const char *key,
                           const struct buf *raw)
{
    json_w_key(w, key);
    if (raw->len == 0) {
        json_w_null(w);
        return false;
    }
    if (raw->len <= TURN_MAP_EVENT_CAP) {
        json_w_raw(w, raw->data, raw->len);
        return false;
    }
    json_w_strn(w, raw->data, TURN_MAP_EVENT_CAP);
    return true;
}

static void begin_event(struct json_w *w, struct buf *out,
                        const struct turn_map *t, int index)
{
    json_w_init(w, out);
    json_w_obj_begin(w);
    json_w_kstr(w, "message_id", t->message_id);
    if (index >= 0)
        json_w_kint(w, "index", index);
}

static void end_event(struct json_w *w, bool truncated)
{
    if (truncated)
        json_w_kbool(w, "truncated", true);
    json_w_obj_end(w);
}

static void emit_text(const struct turn_map *t, int idx, const char *type,
                      const char *field, const char *s, size_t len,
                      bool durable, turn_emit_fn emit, void *arg)
{
    struct buf out;
    struct json_w w;
    buf_init(&out);
    begin_event(&w, &out, t, idx);
    bool cut = put_capped(&w, field, s, len);
    end_event(&w, cut);
    emit(arg, type, &out, durable);
    buf_deinit(&out);
}

/* tool: {id, name, input | result, error?, parent_id} */
static void emit_tool(const struct turn_map *t, int idx, const char *type,
                      bool with_result, turn_emit_fn emit, void *arg)
{
    const struct turn_block *b = &t->blocks[idx];
    struct buf out;
    struct json_w w;
    buf_init(&out);
    begin_event(&w, &out, t, idx);
    json_w_key(&w, "tool");
    json_w_obj_begin(&w);
    json_w_kstr(&w, "id", b->tool_id);
    json_w_kstr(&w, "name", b->name);
    bool cut = with_result ? put_raw_capped(&w, "result", &b->result)
                           : put_raw_capped(&w, "input", &b->input);
    if (with_result && b->is_error)
        json_w_kstr(&w, "error", "the tool reported an error");
    json_w_kstr(&w, "parent_id", b->parent_id);
    json_w_obj_end(&w);
    end_event(&w, cut);
    emit(arg, type, &out, true);
    buf_deinit(&out);
}

/* ---- stream_event: deltas ---- */

static void on_stream_event(struct turn_map *t, const struct json_doc *d,
                            int ev, turn_emit_fn emit, void *arg)
{
    if (str_is(d, ev, "type", "message_start")) {
        copy_str(d, json_path(d, ev, "message.id"), t->stream_msg,
                 sizeof(t->stream_msg));
        msg_for(t, t->stream_msg);
        return;
    }
    if (!t->stream_msg[0])
        return;
    int64_t i;
    if (json_get_int64(d, json_get(d, ev, "index"), &i) < 0 || i < 0 ||
        i > 10000)
        return;
    struct turn_msg *m = msg_for(t, t->stream_msg);
    int idx = m->base + (int)i;
    if (str_is(d, ev, "type", "content_block_start")) {
        int cb = json_get(d, ev, "content_block");
        enum block_kind k = str_is(d, cb, "type", "thinking") ? BLOCK_THINKING
                            : str_is(d, cb, "type", "tool_use") ? BLOCK_TOOL
                                                                 : BLOCK_TEXT;
        block_at(t, idx, k)->kind = k;
        return;
    }
    if (!str_is(d, ev, "type", "content_block_delta"))
        return;
    int delta = json_get(d, ev, "delta");
    bool thinking = str_is(d, delta, "type", "thinking_delta");
    if (!thinking && !str_is(d, delta, "type", "text_delta"))
        return; /* tool input and signatures are not streamed to clients */
    struct turn_block *b = block_at(t, idx, thinking ? BLOCK_THINKING
                                                     : BLOCK_TEXT);
    size_t before = b->text.len;
    append_str(d, json_get(d, delta, thinking ? "thinking" : "text"),
               &b->text);
    emit_text(t, idx,
              thinking ? "assistant_thinking_delta" : "assistant_text_delta",
              thinking ? "thinking" : "text", b->text.data + before,
              b->text.len - before, false, emit, arg);
}

/* ---- assistant lines: final blocks ---- */

static void final_text(struct turn_map *t, const struct json_doc *d, int c,
                       int idx, bool thinking, turn_emit_fn emit, void *arg)
{
    struct turn_block *b = block_at(t, idx,
                                    thinking ? BLOCK_THINKING : BLOCK_TEXT);
    b->kind = thinking ? BLOCK_THINKING : BLOCK_TEXT;
    b->final = true;
    buf_reset(&b->text);
    append_str(d, json_get(d, c, thinking ? "thinking" : "text"), &b->text);
    emit_text(t, idx, thinking ? "assistant_thinking" : "assistant_text",
              thinking ? "thinking" : "text", b->text.data ? b->text.data : "",
              b->text.len, true, emit, arg);
}

static void final_tool(struct turn_map *t, const struct json_doc *d, int c,
                       int idx, const char *parent, turn_emit_fn emit,
                       void *arg)
{
    struct turn_block *b = block_at(t, idx, BLOCK_TOOL);
    b->kind = BLOCK_TOOL;
    b->final = true;
    free(b->tool_id);
    free(b->name);
    free(b->parent_id);
    b->tool_id = dup_or_null(d, json_get(d, c, "id"));
    b->name = dup_or_null(d, json_get(d, c, "name"));
    b->parent_id = parent ? xstrdup(parent) : NULL;
    size_t len;
    const char *raw = json_raw(d, json_get(d, c, "input"), &len);
    buf_reset(&b->input);
    if (raw)
        buf_append(&b->input, raw, len);
    emit_tool(t, idx, "tool_started", false, emit, arg);
}

static void on_assistant(struct turn_map *t, const struct json_doc *d,
                         turn_emit_fn emit, void *arg)
{
    int msg = json_get(d, 0, "message");
    int content = json_get(d, msg, "content");
    char parent[72] = "", id[72] = "";
    copy_str(d, json_get(d, 0, "parent_tool_use_id"), parent, sizeof(parent));
    copy_str(d, json_get(d, msg, "id"), id, sizeof(id));
    struct turn_msg *m = parent[0] ? NULL : msg_for(t, id);
    for (int k = 0; k < json_len(d, content); k++) {
        int c = json_at(d, content, k);
        bool tool = str_is(d, c, "type", "tool_use") ||
                    str_is(d, c, "type", "server_tool_use");
        bool thinking = str_is(d, c, "type", "thinking");
        if (!tool && !thinking && !str_is(d, c, "type", "text"))
            continue; /* redacted thinking, results of server tools */
        if (parent[0]) { /* a sub-agent: only its tools are shown */
            if (tool)
                final_tool(t, d, c, t->nblocks, parent, emit, arg);
            continue;
        }
        int idx = m->base + m->seen++;
        if (tool)
            final_tool(t, d, c, idx, NULL, emit, arg);
        else
            final_text(t, d, c, idx, thinking, emit, arg);
    }
}

/* ---- user lines: tool results ---- */

static void on_user(struct turn_map *t, const struct json_doc *d,
                    turn_emit_fn emit, void *arg)
{
    int content = json_path(d, 0, "message.content");
    for (int k = 0; k < json_len(d, content); k++) {
        int c = json_at(d, content, k);
        if (!str_is(d, c, "type", "tool_result"))
            continue;
        char tool_id[72] = "";
        copy_str(d, json_get(d, c, "tool_use_id"), tool_id, sizeof(tool_id));
        int idx = find_tool(t, tool_id);
        if (idx < 0)
            continue;
        struct turn_block *b = &t->blocks[idx];
        size_t len;
        const char *raw = json_raw(d, json_get(d, c, "content"), &len);
        buf_reset(&b->result);
        if (raw)
            buf_append(&b->result, raw, len);
        bool err = false;
        json_get_bool(d, json_get(d, c, "is_error"), &err);
        b->is_error = err;
        b->has_result = true;
        emit_tool(t, idx, err ? "tool_failed" : "tool_completed", true, emit,
                  arg);
    }
}

/* ---- system lines ---- */

static void copy_member(struct json_w *w, const struct json_doc *d, int obj,
                        const char *from, const char *to)
{
    size_t len;
    int tok = json_get(d, obj, from);
    const char *raw = json_raw(d, tok, &len);
    if (!raw)
        return;
    json_w_key(w, to);
    json_w_raw(w, raw, len);
}

/* The system lines worth a durable event: the CLI also sends status and
 * token-estimate lines with every request, which would flood the log. */
static bool system_shown(const struct json_doc *d, const char *subtype)
{
    static const char *const shown[] = {
        "init", "api_retry", "compact_boundary", "informational",
        "permission_denied", "task_started", "task_notification",
    };
    for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
        if (strcmp(subtype, shown[i]) == 0)
            return true;
    return strcmp(subtype, "status") == 0 &&
           str_is(d, 0, "status", "compacting");
}

static void on_system(struct turn_map *t, const struct json_doc *d,
                      turn_emit_fn emit, void *arg, struct turn_line *out)
{
    char subtype[40] = "";
    copy_str(d, json_get(d, 0, "subtype"), subtype, sizeof(subtype));
    if (!system_shown(d, subtype))
        return;
    struct buf data;
    struct json_w w;
    buf_init(&data);
    begin_event(&w, &data, t, -1);
    json_w_kstr(&w, "subtype", subtype);
    json_w_key(&w, "data");
    if (strcmp(subtype, "init") == 0) {
        out->is_init = true;
        copy_str(d, json_get(d, 0, "session_id"), out->session_id,
                 sizeof(out->session_id));
        json_w_obj_begin(&w);
        copy_member(&w, d, 0, "model", "model");
        copy_member(&w, d, 0, "tools", "tools");
        copy_member(&w, d, 0, "session_id", "session_id");
        copy_member(&w, d, 0, "permissionMode", "permission_mode");
        copy_member(&w, d, 0, "claude_code_version", "cli_version");
        copy_member(&w, d, 0, "mcp_servers", "mcp_servers");
        json_w_obj_end(&w);
    } else {
        size_t len;
        const char *raw = json_raw(d, 0, &len);
        if (len > TURN_MAP_EVENT_CAP)
            json_w_null(&w);
        else
            json_w_raw(&w, raw, len);
    }
    end_event(&w, false);
    emit(arg, "system", &data, true);
    buf_deinit(&data);
}

/* ---- result ---- */

static int64_t int_at(const struct json_doc *d, int obj, const char *key)
{
    int64_t v = 0;
    json_get_int64(d, json_get(d, obj, key), &v);
    return v < 0 ? 0 : v;
}

static void result_usage(const struct json_doc *d, struct turn_line *out)
{
    int per_model = json_get(d, 0, "model_usage_since_last_result");
    for (int i = 0; i < json_len(d, per_model) &&
                    out->nusage < TURN_MAP_MAX_USAGE; i++) {
        int key;
        int u = json_member(d, per_model, i, &key);
        struct turn_usage *row = &out->usage[out->nusage++];
        copy_str(d, key, row->model, sizeof(row->model));
        row->input_tokens = int_at(d, u, "inputTokens");
        row->output_tokens = int_at(d, u, "outputTokens");
        row->cache_creation_input_tokens = int_at(d, u,
                                                  "cacheCreationInputTokens");
        row->cache_read_input_tokens = int_at(d, u, "cacheReadInputTokens");
        out->usage_per_model = true;
    }
    if (out->nusage || json_type(d, json_get(d, 0, "usage")) != JSON_OBJECT)
        return;
    /* Builds without the per-model field: the main loop's usage. */
    int u = json_get(d, 0, "usage");
    struct turn_usage *row = &out->usage[out->nusage++];
    row->input_tokens = int_at(d, u, "input_tokens");
    row->output_tokens = int_at(d, u, "output_tokens");
    row->cache_creation_input_tokens = int_at(d, u,
                                              "cache_creation_input_tokens");
    row->cache_read_input_tokens = int_at(d, u, "cache_read_input_tokens");
}

static void on_result(const struct json_doc *d, struct turn_line *out)
{
    out->is_result = true;
    json_get_bool(d, json_get(d, 0, "is_error"), &out->is_error);
    copy_str(d, json_get(d, 0, "session_id"), out->session_id,
             sizeof(out->session_id));
    copy_str(d, json_get(d, 0, "terminal_reason"), out->terminal_reason,
             sizeof(out->terminal_reason));
    int res = json_get(d, 0, "result"), errs = json_get(d, 0, "errors");
    if (json_type(d, res) == JSON_STRING) {
        copy_str(d, res, out->error_text, sizeof(out->error_text));
    } else if (json_len(d, errs) > 0) {
        copy_str(d, json_at(d, errs, 0), out->error_text,
                 sizeof(out->error_text));
    } else {
        copy_str(d, json_get(d, 0, "subtype"), out->error_text,
                 sizeof(out->error_text));
    }
    result_usage(d, out);
}

void turn_map_line(struct turn_map *t, const struct json_doc *doc,
                   turn_emit_fn emit, void *arg, struct turn_line *out)
{
    memset(out, 0, sizeof(*out));
    if (str_is(doc, 0, "type", "stream_event")) {
        if (json_type(doc, json_get(doc, 0, "parent_tool_use_id")) !=
            JSON_STRING)
            on_stream_event(t, doc, json_get(doc, 0, "event"), emit, arg);
    } else if (str_is(doc, 0, "type", "assistant")) {
        on_assistant(t, doc, emit, arg);
    } else if (str_is(doc, 0, "type", "user")) {
        on_user(t, doc, emit, arg);
    } else if (str_is(doc, 0, "type", "system")) {
        on_system(t, doc, emit, arg, out);
    } else if (str_is(doc, 0, "type", "result")) {
        on_result(doc, out);
    }
}

/* ---- the message's content and usage ---- */

void turn_map_content(const struct turn_map *t, struct buf *out)
{
    struct json_w w;
    json_w_init(&w, out);
    json_w_arr_begin(&w);
    for (int i = 0; i < t->nblocks; i++) {
        const struct turn_block *b = &t->blocks[i];
        json_w_obj_begin(&w);
        if (b->kind == BLOCK_TOOL) {
            json_w_kstr(&w, "type", "tool");
            json_w_kint(&w, "index", i);
            json_w_kstr(&w, "id", b->tool_id);
            json_w_kstr(&w, "name", b->name);
            json_w_key(&w, "input");
            if (b->input.len)
                json_w_raw(&w, b->input.data, b->input.len);
            else
                json_w_null(&w);
            json_w_kstr(&w, "parent_id", b->parent_id);
            if (b->has_result) {
                json_w_key(&w, "result");
                json_w_raw(&w, b->result.data, b->result.len);
            }
            if (b->is_error)
                json_w_kstr(&w, "error", "the tool reported an error");
        } else {
            const char *f = b->kind == BLOCK_TEXT ? "text" : "thinking";
            json_w_kstr(&w, "type", f);
            json_w_kint(&w, "index", i);
            json_w_key(&w, f);
            json_w_strn(&w, b->text.data ? b->text.data : "", b->text.len);
        }
        json_w_obj_end(&w);
    }
    json_w_arr_end(&w);
}
