/* The route table: every endpoint corrald serves. The OpenAPI document
 * (src/api/openapi.json) must list exactly the routes without
 * ROUTE_NO_API; an integration test compares the two. */
#include "corral/api.h"
#include "corral/mem.h"

#define AUTH ROUTE_AUTH
#define JSON ROUTE_JSON_BODY

const struct route http_routes[] = {
    {HTTP_GET, "/healthz", api_healthz, ROUTE_NO_API, "healthz"},
    {HTTP_GET, "/readyz", api_readyz, ROUTE_NO_API, "readyz"},
    {HTTP_GET, "/metrics", api_metrics, ROUTE_NO_API, "metrics"},
    {HTTP_GET, "/api/v1/openapi.json", api_openapi, 0, "openapi"},
    {HTTP_POST, "/api/v1/auth/register", api_auth_register, JSON,
     "auth_register"},
    {HTTP_POST, "/api/v1/auth/login", api_auth_login, JSON, "auth_login"},
    {HTTP_POST, "/api/v1/auth/refresh", api_auth_refresh, JSON,
     "auth_refresh"},
    {HTTP_POST, "/api/v1/auth/logout", api_auth_logout, JSON, "auth_logout"},
    {HTTP_POST, "/api/v1/auth/password", api_auth_password, AUTH | JSON,
     "auth_password"},
    {HTTP_GET, "/api/v1/auth/me", api_auth_me, AUTH, "auth_me"},
    {HTTP_POST, "/api/v1/auth/api-keys", api_keys_create, AUTH | JSON,
     "api_keys_create"},
    {HTTP_GET, "/api/v1/auth/api-keys", api_keys_list, AUTH,
     "api_keys_list"},
    {HTTP_DELETE, "/api/v1/auth/api-keys/{id}", api_keys_delete, AUTH,
     "api_keys_delete"},
    {HTTP_POST, "/api/v1/chats", api_chats_create, AUTH | JSON,
     "chats_create"},
    {HTTP_GET, "/api/v1/chats", api_chats_list, AUTH, "chats_list"},
    {HTTP_GET, "/api/v1/chats/{id}", api_chats_get, AUTH, "chats_get"},
    {HTTP_PATCH, "/api/v1/chats/{id}", api_chats_update, AUTH | JSON,
     "chats_update"},
    {HTTP_DELETE, "/api/v1/chats/{id}", api_chats_delete, AUTH,
     "chats_delete"},
    {HTTP_GET, "/api/v1/chats/{id}/messages", api_messages_list, AUTH,
     "messages_list"},
    {HTTP_GET, "/api/v1/chats/{id}/messages/{mid}", api_messages_get, AUTH,
     "messages_get"},
    {HTTP_POST, "/api/v1/chats/{id}/messages", api_messages_send,
     AUTH | JSON, "messages_send"},
    {HTTP_POST, "/api/v1/chats/{id}/messages/{mid}/retry",
     api_messages_retry, AUTH, "messages_retry"},
    {HTTP_POST, "/api/v1/chats/{id}/interrupt", api_chat_interrupt,
     AUTH | ROUTE_JSON_OPTIONAL, "chat_interrupt"},
    {HTTP_GET, "/api/v1/chats/{id}/status", api_chat_status, AUTH,
     "chat_status"},
    {HTTP_GET, "/api/v1/chats/{id}/stream", api_chat_stream,
     AUTH | ROUTE_QUERY_TOKEN, "chat_stream"},
    {HTTP_GET, "/api/v1/settings", api_settings_get, AUTH, "settings_get"},
    {HTTP_PUT, "/api/v1/settings", api_settings_put, AUTH | JSON,
     "settings_put"},
    {HTTP_GET, "/api/v1/models", api_models_list, AUTH, "models_list"},
    {HTTP_PUT, "/api/v1/admin/models/{model}", api_admin_model_put,
     ROUTE_ADMIN | JSON, "admin_model_put"},
    {HTTP_GET, "/api/v1/admin/users", api_admin_users_list, ROUTE_ADMIN,
     "admin_users_list"},
    {HTTP_PATCH, "/api/v1/admin/users/{id}", api_admin_user_patch,
     ROUTE_ADMIN | JSON, "admin_user_patch"},
};

const size_t http_routes_count = ARRAY_SIZE(http_routes);
