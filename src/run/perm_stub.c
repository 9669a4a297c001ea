/* TEMPORARY (issue 4, part C): stands in for the runtime's
 * chats_permission_answer until src/run/ implements it; the lead deletes
 * this file (and its line in meson.build) when merging the runtime.
 * Weak, so the real definition wins if both are linked. */
#include "corral/chats.h"

__attribute__((weak)) int
chats_permission_answer(struct chats *c, const char *chat_id,
                        const struct perm_answer *a,
                        void (*cb)(void *arg, const struct pg_reply *r),
                        void *arg)
{
    (void)c;
    (void)chat_id;
    (void)a;
    (void)cb;
    (void)arg;
    return -1; /* no request is ever pending here yet */
}
