/* placeholder: written in a later commit */
typedef int migrate_placeholder;
