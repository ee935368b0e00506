/* envelope_codec.c: placeholder, being written. */
