/* resolver.c: placeholder, being written. */
