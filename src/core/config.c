/* placeholder: written in a later commit */
typedef int config_placeholder;
