/* placeholder: written in a later commit */
typedef int pg_placeholder;
