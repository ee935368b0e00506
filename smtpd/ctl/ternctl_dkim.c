/*
 * ternctl_dkim.c - "ternctl dkim keygen": a new DKIM private key, written
 * to a file only its owner may read, and the DNS TXT record to publish.
 *
 *   ternctl [-c FILE] dkim keygen DOMAIN SELECTOR [--type rsa|ed25519]
 *       [--bits 2048] [--out FILE]
 *
 * Needs neither the daemon nor the configuration (-c only places the
 * default --out: <dir of FILE>/dkim/DOMAIN.SELECTOR.key). Never
 * overwrites a file. The key is 0600 and belongs to whoever runs ternctl:
 * ternd reads dkim-sign keys as root at start and through its privileged
 * helper on reload, so root's key is right when ternd starts as root.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/dkim.h"
#include "tern/util.h"
#include "ternctl_int.h"

static void
ternctl_dkim_usage(void)
{
	fprintf(stderr, "usage: ternctl [-c FILE] dkim keygen DOMAIN SELECTOR "
	    "[--type rsa|ed25519] [--bits 2048] [--out FILE]\n");
}

/* Letters, digits, '-', '_' and '.', not empty, no leading dot. */
static int
ternctl_dkim_name_ok(const char *s)
{
	if (s[0] == '\0' || s[0] == '.' || strlen(s) > 253)
		return 0;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' ||
		    *s == '.'))
			return 0;
	return 1;
}

/* Write pem to a new file path, mode 0600, synced. 0 or -1 (message said). */
static int
ternctl_dkim_write(const char *path, const char *pem)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600);

	if (fd < 0) {
		fprintf(stderr, "ternctl: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (write_all(fd, pem, strlen(pem)) < 0 || fsync(fd) < 0) {
		fprintf(stderr, "ternctl: %s: %s\n", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

static int
ternctl_dkim_keygen(int argc, char **argv, const char *conf_path)
{
	const char *type = "rsa", *out = NULL, *domain, *selector;
	unsigned bits = 2048;
	char path[4096], err[256], *pem = NULL, *txt, strs[2048];
	struct dkim_key *k;
	int rc = 4;

	if (argc < 2)
		goto usage;
	domain = argv[0];
	selector = argv[1];
	for (int i = 2; i < argc; i += 2) {
		if (i + 1 >= argc)
			goto usage;
		if (strcmp(argv[i], "--type") == 0)
			type = argv[i + 1];
		else if (strcmp(argv[i], "--out") == 0)
			out = argv[i + 1];
		else if (strcmp(argv[i], "--bits") == 0) {
			char *end;
			unsigned long b = strtoul(argv[i + 1], &end, 10);
			if (*end != '\0' || b < 1024 || b > 8192) {
				fprintf(stderr, "ternctl: --bits: 1024 to 8192\n");
				return 2;
			}
			bits = (unsigned)b;
		} else
			goto usage;
	}
	if (!ternctl_dkim_name_ok(domain) || !ternctl_dkim_name_ok(selector)) {
		fprintf(stderr, "ternctl: bad domain or selector\n");
		return 2;
	}
	if (strcmp(type, "rsa") != 0 && strcmp(type, "ed25519") != 0)
		goto usage;
	if (out == NULL) {
		const char *slash = strrchr(conf_path, '/');
		int dl = slash != NULL ? (int)(slash - conf_path) : 1;
		snprintf(path, sizeof(path), "%.*s/dkim", dl,
		    slash != NULL ? conf_path : ".");
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "ternctl: %s: %s\n", path, strerror(errno));
			return 4;
		}
		snprintf(path + strlen(path), sizeof(path) - strlen(path),
		    "/%s.%s.key", domain, selector);
		out = path;
	}
	if ((k = dkim_keygen(type, bits, &pem, err, sizeof(err))) == NULL) {
		fprintf(stderr, "ternctl: %s\n", err);
		return 4;
	}
	txt = dkim_key_txt(k);
	if (txt == NULL || dkim_txt_strings(txt, strs, sizeof(strs)) == 0) {
		fprintf(stderr, "ternctl: cannot encode the public key\n");
		goto done;
	}
	if (ternctl_dkim_write(out, pem) != 0)
		goto done;
	printf("%s._domainkey.%s. IN TXT %s\n", selector, domain, strs);
	fprintf(stderr, "ternctl: private key written to %s (mode 0600); "
	    "publish the record above, then add to tern.conf:\n"
	    "  dkim-sign %s %s %s\n", out, domain, selector, out);
	rc = fflush(stdout) == 0 ? 0 : 4;
done:
	free(txt);
	dkim_key_free(k);
	if (pem != NULL)
		explicit_bzero(pem, strlen(pem));
	free(pem);
	return rc;
usage:
	ternctl_dkim_usage();
	return 2;
}

int
ternctl_dkim_main(int argc, char **argv, int *rc)
{
	const char *conf_path = TERNCTL_CONF;
	int i = ternctl_command_index(argc, argv, &conf_path);

	if (i == 0 || strcmp(argv[i], "dkim") != 0)
		return 0;
	if (i + 1 >= argc || strcmp(argv[i + 1], "keygen") != 0) {
		ternctl_dkim_usage();
		*rc = 2;
		return 1;
	}
	*rc = ternctl_dkim_keygen(argc - i - 2, argv + i + 2, conf_path);
	return 1;
}
