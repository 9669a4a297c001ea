/* placeholder: written in a later commit */
typedef int ids_placeholder;
