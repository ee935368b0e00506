/*
 * layer_main.c - the empty program that tests/unit/meson.build links with
 * the whole of one library (link_whole) and the libraries below it: the
 * link fails if any object of that library calls a layer above it.
 */
int main(void);

int
main(void)
{
	return 0;
}
