/* placeholder: written in a later commit */
typedef int ratelimit_placeholder;
