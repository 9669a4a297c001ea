/* placeholder: written in a later commit */
typedef int router_placeholder;
