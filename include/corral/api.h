/* api: the route handlers (src/api/) and the authentication step that
 * http.c runs before handlers of ROUTE_AUTH routes. */
#ifndef CORRAL_API_H
#define CORRAL_API_H

#include "corral/http.h"

/* Resolves the request's credentials (Bearer JWT or crl_ API key, or
 * ?access_token= on ROUTE_QUERY_TOKEN routes) into r->auth, then calls
 * next(r); answers 401/403/503 itself instead when they fail. */
void auth_authenticate(struct req *r, void (*next)(struct req *r));

/* Lowercase hex SHA-256 of a bearer secret (API key, refresh token): the
 * form stored in the database. */
void auth_token_hash(const char *token, char out[65]);

/* health.c */
void api_healthz(struct req *r);
void api_readyz(struct req *r);
void api_metrics(struct req *r);
void api_openapi(struct req *r);

/* auth.c */
void api_auth_register(struct req *r);
void api_auth_login(struct req *r);
void api_auth_refresh(struct req *r);
void api_auth_logout(struct req *r);
void api_auth_password(struct req *r);
void api_auth_me(struct req *r);
void api_keys_create(struct req *r);
void api_keys_list(struct req *r);
void api_keys_delete(struct req *r);

/* chats.c */
void api_chats_create(struct req *r);
void api_chats_list(struct req *r);
void api_chats_get(struct req *r);
void api_chats_update(struct req *r);
void api_chats_delete(struct req *r);

/* messages_read.c */
void api_messages_list(struct req *r);
void api_messages_get(struct req *r);

/* messages.c: sending, retry, interrupt, status */
void api_messages_send(struct req *r);
void api_messages_retry(struct req *r);
void api_chat_interrupt(struct req *r);
void api_chat_status(struct req *r);

/* stream.c */
void api_chat_stream(struct req *r);

/* usage.c */
void api_usage_get(struct req *r);
/* permissions.c */
void api_permissions_list(struct req *r);
void api_permissions_answer(struct req *r);
void api_permission_rules_list(struct req *r);
void api_permission_rules_delete(struct req *r);
/* settings.c */
void api_settings_get(struct req *r);
void api_settings_put(struct req *r);

/* checkpoints.c */
void api_checkpoints_list(struct req *r);
void api_checkpoints_restore(struct req *r);

/* admin.c: models and the admin endpoints */
void api_models_list(struct req *r);
void api_admin_model_put(struct req *r);
void api_admin_users_list(struct req *r);
void api_admin_user_patch(struct req *r);
/* POST /admin/chats/{id}/events: only with config bench_publish */
void api_admin_bench_publish(struct req *r);

/* attachments.c, files.c: attachments and the workspace files API */
void api_attachments_upload(struct req *r);
void api_attachments_list(struct req *r);
void api_attachments_get(struct req *r);
void api_attachments_delete(struct req *r);
void api_files_list(struct req *r);
void api_files_content_get(struct req *r);
void api_files_content_put(struct req *r);
void api_files_delete(struct req *r);
void api_files_mkdir(struct req *r);
void api_files_archive(struct req *r);
/* The blob path of an attachment's bytes: <data_dir>/attachments/
 * <sha[0:2]>/<sha>. */
void attach_blob_path(const char *data_dir, const char *sha, char *out,
                      size_t n);
/* Removes a blob no attachment row uses any more (ENOENT is fine). */
void attach_blob_unlink(const char *data_dir, const char *sha);

#endif
