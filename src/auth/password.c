/* placeholder: written in a later commit */
typedef int password_placeholder;
