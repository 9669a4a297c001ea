/* placeholder: written in a later commit */
typedef int jwt_placeholder;
