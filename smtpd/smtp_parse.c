/* smtp_parse.c: placeholder, being written. */
