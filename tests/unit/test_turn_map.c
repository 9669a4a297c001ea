#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "corral/turn_map.h"

#define MID "0190a0b0-0000-7000-8000-000000000001"

struct events {
    char type[32][40];
    char data[32][1024];
    bool durable[32];
    int n;
};

static void emit(void *arg, const char *type, const struct buf *data,
                 bool durable)
{
    struct events *e = arg;
    assert_true(e->n < 32);
    snprintf(e->type[e->n], sizeof(e->type[0]), "%s", type);
    snprintf(e->data[e->n], sizeof(e->data[0]), "%s", data->data);
    e->durable[e->n++] = durable;
}

static void feed(struct turn_map *t, const char *line, struct events *e,
                 struct turn_line *out)
{
    struct json_doc *d;
    assert_int_equal(json_parse(line, strlen(line), NULL, &d, NULL), 0);
    turn_map_line(t, d, emit, e, out);
    json_doc_free(d);
}

/* A turn: thinking + text streamed, a tool call, its result, final text. */
static const char *const turn[] = {
    "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-1\","
    "\"model\":\"m\",\"tools\":[\"Bash\"],\"permissionMode\":\"default\"}",
    "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":"
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}}",
    "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":"
    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
    "{\"type\":\"thinking\"}}}",
    "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":"
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
    "{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}}",
    "{\"type\":\"assistant\",\"parent_tool_use_id\":null,\"message\":{\"id\":"
    "\"msg_1\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\","
    "\"signature\":\"x\"}]}}",
    "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":"
    "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
    "{\"type\":\"text_delta\",\"text\":\"Hel\"}}}",
    "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":"
    "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
    "{\"type\":\"text_delta\",\"text\":\"lo\\n\"}}}",
    "{\"type\":\"assistant\",\"parent_tool_use_id\":null,\"message\":{\"id\":"
    "\"msg_1\",\"content\":[{\"type\":\"text\",\"text\":\"Hello\\n\"}]}}",
    "{\"type\":\"assistant\",\"parent_tool_use_id\":null,\"message\":{\"id\":"
    "\"msg_1\",\"content\":[{\"type\":\"tool_use\",\"id\":\"toolu_1\","
    "\"name\":\"Bash\",\"input\":{\"command\":\"ls\"}}]}}",
    "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":[{\"type\":"
    "\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":\"a.txt\","
    "\"is_error\":false}]}}",
    "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":"
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\"}}}",
    "{\"type\":\"stream_event\",\"parent_tool_use_id\":null,\"event\":"
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
    "{\"type\":\"text_delta\",\"text\":\"Done\"}}}",
    "{\"type\":\"assistant\",\"parent_tool_use_id\":null,\"message\":{\"id\":"
    "\"msg_2\",\"content\":[{\"type\":\"text\",\"text\":\"Done\"}]}}",
    "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,"
    "\"session_id\":\"s-1\",\"result\":\"Done\",\"terminal_reason\":"
    "\"completed\",\"usage\":{\"input_tokens\":1},"
    "\"model_usage_since_last_result\":{\"m\":{\"inputTokens\":10,"
    "\"outputTokens\":20,\"cacheReadInputTokens\":3,"
    "\"cacheCreationInputTokens\":4}}}",
};

static void test_full_turn(void **state)
{
    (void)state;
    struct turn_map t;
    struct events e = {0};
    struct turn_line out;
    turn_map_init(&t, MID);
    for (size_t i = 0; i < sizeof(turn) / sizeof(turn[0]); i++)
        feed(&t, turn[i], &e, &out);
    const char *want[] = {
        "system", "assistant_thinking_delta", "assistant_thinking",
        "assistant_text_delta", "assistant_text_delta", "assistant_text",
        "tool_started", "tool_completed", "assistant_text_delta",
        "assistant_text",
    };
    assert_int_equal(e.n, 10);
    for (int i = 0; i < e.n; i++)
        assert_string_equal(e.type[i], want[i]);
    assert_false(e.durable[1]);
    assert_true(e.durable[2]);
    assert_non_null(strstr(e.data[1], "\"index\":0"));
    assert_non_null(strstr(e.data[4], "\"index\":1,\"text\":\"lo\\n\""));
    assert_non_null(strstr(e.data[5], "\"index\":1,\"text\":\"Hello\\n\""));
    assert_non_null(strstr(e.data[6], "\"index\":2"));
    assert_non_null(strstr(e.data[6], "\"input\":{\"command\":\"ls\"}"));
    assert_non_null(strstr(e.data[7], "\"result\":\"a.txt\""));
    assert_non_null(strstr(e.data[8], "\"index\":3"));
    assert_non_null(strstr(e.data[9], "\"index\":3,\"text\":\"Done\""));
    assert_non_null(strstr(e.data[0], "\"session_id\":\"s-1\""));
    assert_non_null(strstr(e.data[0], "\"message_id\":\"" MID "\""));
    /* The result. */
    assert_true(out.is_result);
    assert_false(out.is_error);
    assert_string_equal(out.session_id, "s-1");
    assert_int_equal(out.nusage, 1);
    assert_true(out.usage_per_model);
    assert_string_equal(out.usage[0].model, "m");
    assert_int_equal(out.usage[0].input_tokens, 10);
    assert_int_equal(out.usage[0].output_tokens, 20);
    assert_int_equal(out.usage[0].cache_read_input_tokens, 3);
    assert_int_equal(out.usage[0].cache_creation_input_tokens, 4);
    struct buf content;
    buf_init(&content);
    turn_map_content(&t, &content);
    assert_string_equal(
        content.data,
        "[{\"type\":\"thinking\",\"index\":0,\"thinking\":\"hm\"},"
        "{\"type\":\"text\",\"index\":1,\"text\":\"Hello\\n\"},"
        "{\"type\":\"tool\",\"index\":2,\"id\":\"toolu_1\",\"name\":\"Bash\","
        "\"input\":{\"command\":\"ls\"},\"parent_id\":null,"
        "\"result\":\"a.txt\"},"
        "{\"type\":\"text\",\"index\":3,\"text\":\"Done\"}]");
    buf_deinit(&content);
    turn_map_deinit(&t);
}

static void test_error_result_and_subagent(void **state)
{
    (void)state;
    struct turn_map t;
    struct events e = {0};
    struct turn_line out;
    turn_map_init(&t, MID);
    feed(&t,
         "{\"type\":\"assistant\",\"parent_tool_use_id\":\"toolu_p\","
         "\"message\":{\"id\":\"msg_s\",\"content\":[{\"type\":\"text\","
         "\"text\":\"sub\"},{\"type\":\"tool_use\",\"id\":\"toolu_s\","
         "\"name\":\"Read\",\"input\":{}}]}}",
         &e, &out);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.type[0], "tool_started");
    assert_non_null(strstr(e.data[0], "\"parent_id\":\"toolu_p\""));
    feed(&t,
         "{\"type\":\"user\",\"message\":{\"content\":[{\"type\":"
         "\"tool_result\",\"tool_use_id\":\"toolu_s\",\"content\":[{\"type\":"
         "\"text\",\"text\":\"no\"}],\"is_error\":true}]}}",
         &e, &out);
    assert_string_equal(e.type[1], "tool_failed");
    assert_non_null(strstr(e.data[1], "\"error\""));
    feed(&t,
         "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":true,"
         "\"result\":\"API Error: 500\",\"terminal_reason\":\"api_error\","
         "\"usage\":{\"input_tokens\":5,\"output_tokens\":0}}",
         &e, &out);
    assert_true(out.is_result && out.is_error);
    assert_string_equal(out.error_text, "API Error: 500");
    assert_string_equal(out.terminal_reason, "api_error");
    assert_int_equal(out.nusage, 1);
    assert_false(out.usage_per_model);
    assert_int_equal(out.usage[0].input_tokens, 5);
    turn_map_deinit(&t);
}

static void test_truncation(void **state)
{
    (void)state;
    size_t n = TURN_MAP_EVENT_CAP + 1000;
    struct buf lb;
    buf_init(&lb);
    buf_puts(&lb, "{\"type\":\"assistant\",\"message\":{\"id\":\"m\","
                  "\"content\":[{\"type\":\"text\",\"text\":\"");
    for (size_t i = 0; i < n; i++)
        buf_putc(&lb, 'a');
    buf_puts(&lb, "\"}]}}");
    char *line = buf_steal(&lb, NULL);
    struct turn_map t;
    struct turn_line out;
    struct json_doc *d;
    assert_int_equal(json_parse(line, strlen(line), NULL, &d, NULL), 0);
    turn_map_init(&t, MID);
    struct events *e = calloc(1, sizeof(*e));
    turn_map_line(&t, d, emit, e, &out);
    assert_int_equal(e->n, 1);
    struct buf content;
    buf_init(&content);
    turn_map_content(&t, &content);
    assert_true(content.len > n); /* the message keeps everything */
    buf_deinit(&content);
    json_doc_free(d);
    turn_map_deinit(&t);
    free(e);
    free(line);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_turn),
        cmocka_unit_test(test_error_result_and_subagent),
        cmocka_unit_test(test_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
