/* data_filter.c: placeholder, being written. */
