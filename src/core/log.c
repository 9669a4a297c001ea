/* placeholder: written in a later commit */
typedef int log_placeholder;
