/* placeholder: written in a later commit */
typedef int json_writer_placeholder;
