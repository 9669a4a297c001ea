/* placeholder: written in a later commit */
typedef int crypto_placeholder;
