/* Rule matching for tool approvals; the syntax is in perm_rules.h. */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "corral/json.h"
#include "corral/perm_rules.h"
#include "corral/sandbox.h"

/* The input member a rule's content is about, per tool. */
static const char *subject_field(const char *tool)
{
    static const struct {
        const char *tool, *field;
    } map[] = {
        {"Bash", "command"},     {"Read", "file_path"},
        {"Write", "file_path"},  {"Edit", "file_path"},
        {"MultiEdit", "file_path"}, {"NotebookEdit", "notebook_path"},
        {"Glob", "path"},        {"Grep", "path"},
        {"LS", "path"},          {"WebFetch", "url"},
        {"WebSearch", "query"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].tool, tool) == 0)
            return map[i].field;
    return NULL;
}

static bool is_path_tool(const char *tool)
{
    const char *f = subject_field(tool);
    return f && (strcmp(f, "file_path") == 0 || strcmp(f, "path") == 0 ||
                 strcmp(f, "notebook_path") == 0);
}

static bool match_command(const char *content, const char *cmd)
{
    size_t n = strlen(content);
    if (n >= 2 && strcmp(content + n - 2, ":*") == 0)
        return strncmp(cmd, content, n - 2) == 0;
    if (strchr(content, '*'))
        return fnmatch(content, cmd, 0) == 0;
    return strcmp(content, cmd) == 0;
}

/* Paths: the pattern against the absolute path, and a relative pattern
 * against the path below the workspace root. */
static bool match_path(const char *content, const char *path)
{
    const char *root = SANDBOX_WORKSPACE "/";
    size_t rootlen = strlen(root);
    if (strncmp(content, "./", 2) == 0)
        content += 2;
    if (fnmatch(content, path, 0) == 0)
        return true;
    if (content[0] != '/' && strncmp(path, root, rootlen) == 0)
        return fnmatch(content, path + rootlen, 0) == 0;
    return false;
}

/* "domain:example.com" holds for that host and its subdomains. */
static bool match_domain(const char *content, const char *url)
{
    if (strncmp(content, "domain:", 7) != 0)
        return match_command(content, url);
    const char *want = content + 7;
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t hl = strcspn(host, "/:?#");
    const char *at = memchr(host, '@', hl);
    if (at) {
        hl -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    size_t wl = strlen(want);
    if (hl == wl)
        return strncasecmp(host, want, wl) == 0;
    return hl > wl && host[hl - wl - 1] == '.' &&
           strncasecmp(host + hl - wl, want, wl) == 0;
}

static bool match_subject(const char *tool, const char *content,
                          const char *subject)
{
    if (is_path_tool(tool))
        return match_path(content, subject);
    if (strcmp(tool, "WebFetch") == 0)
        return match_domain(content, subject);
    return match_command(content, subject);
}

bool perm_rule_matches(const char *tool_name, const char *content,
                       const char *input_json)
{
    if (!content || !*content)
        return true;
    const char *field = subject_field(tool_name);
    struct json_doc *d = NULL;
    if (!field || !input_json ||
        json_parse(input_json, strlen(input_json), NULL, &d, NULL) != JSON_OK)
        return false;
    char *subject = json_str_dup(d, json_get(d, 0, field), NULL);
    json_doc_free(d);
    bool ok = subject && match_subject(tool_name, content, subject);
    free(subject);
    return ok;
}
