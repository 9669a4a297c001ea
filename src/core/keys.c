#include "corral/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "corral/base64.h"
#include "corral/buf.h"
#include "corral/crypto.h"
#include "corral/log.h"

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, mode) < 0 && errno != EEXIST ? -1 : 0;
}

/* Reads 32 bytes as 64 hex digits from path, creating it if missing. */
static int load_or_create(const char *path, uint8_t out[32])
{
    char hex[65] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, hex, 64);
        close(fd);
        if (n != 64 || hex_decode(out, 32, hex, 64) < 0) {
            log_error("%s: not 64 hex digits", path);
            return -1;
        }
        return 0;
    }
    if (crypto_random(out, 32) < 0)
        return -1;
    struct buf b;
    buf_init(&b);
    hex_encode(&b, out, 32);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ssize_t w = fd >= 0 ? write(fd, b.data, b.len) : -1;
    if (fd >= 0)
        close(fd);
    buf_deinit(&b);
    if (w != 64) {
        log_error("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    log_info("generated %s", path);
    return 0;
}

int keys_load(const struct config *cfg, uint8_t jwt_key[32],
              uint8_t secret_key[32])
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/keys", cfg->data_dir);
    if (mkdir_p(dir, 0700) < 0) {
        log_error("cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (cfg->jwt_secret) {
        crypto_sha256(cfg->jwt_secret, strlen(cfg->jwt_secret), jwt_key);
    } else {
        snprintf(path, sizeof(path), "%s/jwt.key", dir);
        if (load_or_create(path, jwt_key) < 0)
            return -1;
    }
    if (cfg->secret_key)
        return hex_decode(secret_key, 32, cfg->secret_key, 64);
    snprintf(path, sizeof(path), "%s/secret.key", dir);
    return load_or_create(path, secret_key);
}
