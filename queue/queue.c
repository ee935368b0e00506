/* queue.c: placeholder, being written. */
