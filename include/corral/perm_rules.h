/* perm_rules: whether a permission rule decides a tool request (DESIGN.md
 * §5: corral matches every can_use_tool request against the chat's rules
 * and the user's allowed_tools itself). A rule is a tool name and an
 * optional content in the CLI's rule syntax:
 *   no content          every use of the tool
 *   Bash                "npm test" (the exact command), "npm test:*" (a
 *                       command starting with "npm test"), or a pattern
 *                       with * wildcards
 *   Read, Write, Edit,  a path or glob (* and ** cross directories), of the
 *   NotebookEdit, Glob, file the tool names; relative patterns are taken
 *   Grep, LS            from the workspace root
 *   WebFetch            "domain:example.com" (that host or a subdomain)
 *   WebSearch           the query, or a pattern
 * Any other tool matches only a rule without content. Pure; unit-tested. */
#ifndef CORRAL_PERM_RULES_H
#define CORRAL_PERM_RULES_H

#include <stdbool.h>

/* input: the request's input object as JSON text. */
bool perm_rule_matches(const char *tool_name, const char *content,
                       const char *input_json);

#endif
