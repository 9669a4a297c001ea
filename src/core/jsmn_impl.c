/* The one translation unit that compiles jsmn's implementation; every other
 * file includes jsmn.h with JSMN_HEADER defined. Parent links make the
 * grammar check and lookups linear instead of quadratic. */
#define JSMN_PARENT_LINKS
#define JSMN_STRICT
#include <jsmn.h>
