/* placeholder: written in a later commit */
typedef int base64_placeholder;
