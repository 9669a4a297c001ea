/* placeholder: written in a later commit */
typedef int redis_placeholder;
