/*
 * conf.h - tern.conf: the loaded, immutable configuration.
 *
 * Format: one directive a line, words separated by blanks, '#' starts a
 * comment. The directive table in base/conf.c is the single source of truth
 * for names, defaults and bounds; etc/tern.conf documents every entry with
 * its default (a unit test checks that they agree).
 *
 * A loaded struct conf is never modified. It is reference-counted: a session
 * pins the conf it started with; SIGHUP builds a new one and swaps the
 * pointer (the old one goes when its last user unrefs it).
 */
#ifndef TERN_CONF_H
#define TERN_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tern/log.h"

/*
 * CONF_LISTEN_LOCAL is never written in a listen line: it is the mode of the
 * local-submission socket (local-socket), whose sessions are local users
 * identified by their uid (tern-sendmail).
 */
enum conf_listen_mode { CONF_LISTEN_RELAY, CONF_LISTEN_SUBMISSION,
	CONF_LISTEN_LOCAL };
enum conf_listen_tls {
	CONF_TLS_NONE,      /* "plain": no TLS offered (tests, local use) */
	CONF_TLS_STARTTLS,  /* STARTTLS offered (default when tls-cert is set) */
	CONF_TLS_IMPLICIT,  /* "tls": TLS from the first byte (RFC 8314) */
};

struct conf_listen {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char *spec;                   /* as written, "127.0.0.1:2525" */
	enum conf_listen_mode mode;
	enum conf_listen_tls tls;
	int proxy;                    /* "proxy": a PROXY protocol header (v1
	                                 or v2) from a proxy-networks peer
	                                 comes first and names the client */
	int line;
};

struct route_auth;

struct conf_cidr {
	int family;                   /* AF_INET or AF_INET6 */
	uint8_t addr[16];             /* network byte order, masked */
	unsigned prefix;
};

enum conf_route_kind {
	CONF_ROUTE_MX,                /* "mx": MX lookup of the recipient domain */
	CONF_ROUTE_HOST_MX,           /* "smtp:host[:port]": MX lookup of host */
	CONF_ROUTE_HOST,              /* "smtp:[host]:port": that host, no MX */
};

/*
 * How a route talks to its next hop: SMTP (RFC 5321), or LMTP (RFC 2033)
 * to a mailbox server over TCP or a unix socket (host is then its path).
 */
#define LMTP_DEFAULT_PORT 24           /* lmtp:[host] without a port */

enum conf_route_transport {
	CONF_XPORT_SMTP = 0,
	CONF_XPORT_LMTP,              /* "lmtp:[host]:port", no MX lookup */
	CONF_XPORT_LMTP_UNIX,         /* "lmtp:unix:/path": host is the path */
};

enum conf_tls_policy {
	CONF_TLSP_NONE, CONF_TLSP_MAY, CONF_TLSP_ENCRYPT, CONF_TLSP_VERIFY,
	CONF_TLSP_DANE,     /* RFC 7672 for MX routes (queue/mta/dane.c);
	                       other routes treat it as "may" */
};

struct conf_route {
	char *domain;                 /* "*", "example.org" or ".example.org" */
	enum conf_route_kind kind;
	char *host;                   /* NULL for CONF_ROUTE_MX */
	uint16_t port;                /* 0 = mx-port */
	enum conf_tls_policy tls;     /* per-route tls-policy (default: global;
	                                 none for LMTP) */
	int line;
	enum conf_route_transport transport;
};

struct conf_tls_pair {
	char *cert;                   /* PEM chain path */
	char *key;                    /* PEM key path */
	int cert_line, key_line;      /* where they were written, for errors */
};

enum conf_bare_newline { CONF_BARE_REJECT, CONF_BARE_NORMALIZE };

/* dest-limit DOMAIN N: max-dest-connections for one destination. */
struct conf_dest_limit {
	char *domain;                 /* lowercase: a recipient domain, or the
	                                 next-hop host of a static route */
	unsigned n;
	int line;
};

/* sender-login USER ADDR|@DOMAIN|* ...: envelope senders a user may use. */
struct conf_sender_login {
	char *user;                   /* lowercase login name */
	char **allow;                 /* "a@b.example", "@b.example" or "*" (lowercase) */
	size_t nallow;
	int line;
};

/*
 * dkim-sign DOMAIN SELECTOR KEYFILE: sign mail whose From: domain is
 * DOMAIN with the key in KEYFILE, published at SELECTOR._domainkey.DOMAIN.
 */
struct dkim_key;
struct conf_dkim_sign {
	char *domain;                 /* lowercase, no trailing dot */
	char *selector;
	char *keyfile;                /* absolute path */
	int line;
	struct dkim_key *key;         /* owned: not read by conf_parse/conf_load
	                                 (OpenSSL is not the base's): ternd
	                                 fills it before the conf is shared and
	                                 sets conf.dkim_key_free */
};

struct conf {
	int refcnt;                   /* atomic; conf_ref()/conf_unref() */
	char *path;                   /* file it was loaded from */

	char *hostname;               /* default: gethostname(), filled by
	                                 conf_load(); conf_parse() leaves NULL
	                                 when the file has no "hostname" */
	char *user;                   /* drop to this user at start; NULL = stay */
	char *queue_dir;              /* default /var/spool/tern */
	char *control_socket;         /* default <queue>/control.sock */
	char *control_group;          /* group allowed to use ternctl; NULL */
	char *local_socket;           /* local-submission socket (tern-sendmail);
	                                 NULL: none ("local-socket none") */
	struct conf_listen local_listen; /* its listener settings: spec "local",
	                                 mode CONF_LISTEN_LOCAL, plain */
	struct conf_sender_login *local_senders; /* local-senders USER ... */
	size_t nlocal_senders;

	struct conf_tls_pair *tls;    /* tls-cert / tls-key pairs, in order */
	size_t ntls;
	int tls_session_tickets;      /* 1 (default): issue TLS session tickets */
	unsigned tls_ticket_lifetime; /* seconds a ticket (and a session) may be
	                                 resumed; default 1h */

	struct conf_listen *listen;
	size_t nlisten;

	char **relay_domains;         /* lowercase; ".x" matches subdomains */
	size_t nrelay_domains;
	struct conf_cidr *trusted;
	size_t ntrusted;
	struct conf_cidr *proxy_nets; /* proxy-networks: who may send a PROXY
	                                 header to a proxy listener */
	size_t nproxy_nets;
	unsigned proxy_timeout;       /* seconds for the PROXY header, 10s */

	struct conf_route *routes;    /* in file order; conf_route_for() picks */
	size_t nroutes;
	enum conf_tls_policy tls_policy;  /* outbound default: may */
	char *route_auth_file;        /* route-auth FILE: smarthost credentials */
	struct route_auth *route_auth;  /* owned: that file's entries, or NULL.
	                                 Not read by conf_parse/conf_load (the
	                                 file may be root's alone): ternd fills
	                                 it (route_auth_load) before the conf
	                                 is shared; freed, zeroed, with it */
	int eightbit_send;            /* 8bit-unconvertible: 0 bounce, 1 send */
	struct conf_dkim_sign *dkim_sign;  /* in file order */
	size_t ndkim_sign;
	int dkim_sign_trusted;        /* 1: sign trusted-networks' mail too */
	void (*dkim_key_free)(struct dkim_key *);  /* frees dkim_sign[].key */

	struct sockaddr_storage *resolvers;  /* empty: /etc/resolv.conf */
	size_t nresolvers;
	uint16_t mx_port;             /* default 25 */
	int mta_sts;                  /* mta-sts on|off: MTA-STS (RFC 8461) for
	                                 MX-routed mail; default 1 (on) */
	uint16_t mta_sts_port;        /* mta-sts-port: HTTPS port of the policy
	                                 fetch, default 443 (tests) */
	char *mta_sts_ca_file;        /* mta-sts-ca-file: CA bundle for the
	                                 policy fetch; NULL = system store */

	uint64_t max_message_size;    /* bytes, default 35M */
	unsigned max_recipients;      /* default 100 */
	unsigned max_connections;     /* total inbound, default 1000 */
	unsigned max_connections_per_ip;  /* default 20 */
	unsigned max_connections_per_ip_trusted;  /* trusted-networks; 0 = none */
	unsigned max_errors;          /* bad commands before 421, default 10 */
	unsigned idle_timeout;        /* seconds, default 300 (RFC 5321 4.5.3.2.7) */
	unsigned session_timeout;     /* seconds, whole session, default 3600 */
	unsigned command_deadline;    /* seconds per command line, and the floor
	                                 of the DATA phase; 0 (default) =
	                                 2 x idle_timeout: see
	                                 conf_command_deadline() */
	uint64_t data_min_rate;       /* bytes/s that extend the DATA deadline,
	                                 default 500 */
	unsigned greet_delay;         /* seconds relay clients wait for 220 and
	                                 must stay silent; default 0 */
	enum conf_bare_newline bare_newline;  /* default reject */
	unsigned max_hops;            /* trace header fields (Received:,
	                                 Delivered-To:) a message may arrive
	                                 with, below this; default 50 */
	int allow_untrusted_routing;  /* 1: untrusted clients may use %, !,
	                                 quoted @ and source routes towards
	                                 relay-domains; default 0 */
	char *postmaster;             /* where RCPT TO:<postmaster> goes;
	                                 default postmaster@<hostname>, filled
	                                 by conf_load() */

	unsigned session_threads;     /* 0 = one per core */
	unsigned delivery_threads;    /* 0 = one per core */
	uint64_t segment_size;        /* queue segment bytes, default 64M */
	uint64_t spool_memory;        /* body bytes kept in memory, default 256K */
	uint64_t spool_memory_total;  /* all bodies' memory, default 64M */
	uint64_t queue_reserve;       /* space kept for a full disk, default 64M */

	unsigned *retry;              /* seconds; last step repeats */
	size_t nretry;
	unsigned max_queue_lifetime;  /* seconds, default 5d */
	unsigned delay_warning;       /* seconds, default 4h; 0 = never */
	unsigned max_dest_connections;   /* per destination, default 10 */
	unsigned max_out_connections;    /* global outbound, default 200 */
	unsigned connect_timeout;     /* seconds, default 30 */
	unsigned command_timeout;     /* seconds; caps every outbound reply wait
	                                 (RFC 5321 4.5.3.2 defaults); 0 = none */
	unsigned greeting_timeout;    /* seconds for the 220, default 5m */
	unsigned data_timeout;        /* seconds for the reply to the final dot,
	                                 default 10m */
	unsigned dest_initial_connections; /* slow start, default 5 */
	unsigned dest_failure_cohort; /* failed connections in a row that mark
	                                 a destination down, default 5 */
	unsigned dest_down_time;      /* seconds a destination stays down
	                                 (doubling while probes fail), 5m */
	struct conf_dest_limit *dest_limits;  /* dest-limit DOMAIN N */
	size_t ndest_limits;

	char *users_db;               /* AUTH users; default <queue>/users.db */
	struct conf_sender_login *sender_login;
	size_t nsender_login;
	unsigned auth_max_failures;   /* per client address and window, default 10 */
	unsigned auth_failure_window; /* seconds, default 15m */

	int log_syslog;               /* "log syslog" vs "log stderr" (default) */
	int log_json;                 /* log-format json */
	char *metrics_listen;         /* "127.0.0.1:9100" or NULL */

	/* TLS reporting (RFC 8460) */
	int tlsrpt;                   /* tlsrpt on|off, default off */
	char *tlsrpt_from;            /* From: and contact-info; NULL: the
	                                 postmaster address */
	char *tlsrpt_org;             /* organization-name; NULL: hostname */
	unsigned tlsrpt_interval;     /* seconds per report period, default
	                                 1d (aligned to UTC days) */
};

/* Error sink: called once per problem with "FILE:LINE: message" text. */
typedef void conf_err_fn(void *arg, const char *msg);

/*
 * Parse buf[0..len) (the text of file fname) into a new conf with every
 * default filled in. Collects all errors (each reported through err) and
 * returns the number of errors; *out is set only when it is 0. Pure: no file
 * access, no logging. The caller owns *out (refcnt 1).
 */
int conf_parse(const char *buf, size_t len, const char *fname,
    struct conf **out, conf_err_fn *err, void *arg);

/*
 * Read and parse path, then check what needs the system (certificate and key
 * files readable, user and control-group exist) and fill hostname from
 * gethostname() when the file has none. Returns the number of errors as
 * conf_parse. Whole-file errors read "FILE: message" (no line).
 */
int conf_load(const char *path, struct conf **out, conf_err_fn *err, void *arg);
/*
 * conf_load with flags. CONF_LOAD_NO_TLS_FILES: do not open the certificate
 * and key files (ternd's reload after the privilege drop, when the
 * privileged helper reads them).
 */
#define CONF_LOAD_NO_TLS_FILES 0x01u
int conf_load_flags(const char *path, unsigned flags, struct conf **out,
    conf_err_fn *err, void *arg);

struct conf *conf_ref(struct conf *c);
void conf_unref(struct conf *c);     /* frees at zero; NULL is a no-op */

/* Pure value parsers (also used by ternctl); 0 ok, -1 bad. */
int conf_parse_size(const char *s, size_t len, uint64_t *out);      /* 35M */
int conf_parse_duration(const char *s, size_t len, unsigned *out);  /* 5m -> 300 */
/* "1.2.3.4:25", "[::1]:25", "host:25"(numeric only); default_port if none
 * (default_port 0: a port is required). Port 0 is never valid. */
int conf_parse_hostport(const char *s, size_t len, uint16_t default_port,
    struct sockaddr_storage *ss, socklen_t *sslen);
int conf_parse_cidr(const char *s, size_t len, struct conf_cidr *out);

/* Lookups (pure over the conf). */
int conf_is_trusted(const struct conf *c, const struct sockaddr *sa);
/* Is sa in proxy-networks (may it speak for clients on a proxy listener)? */
int conf_is_proxy_peer(const struct conf *c, const struct sockaddr *sa);
/* command-deadline in seconds: as set, or 2 x idle-timeout when 0. */
unsigned conf_command_deadline(const struct conf *c);
/* domain: as in the address, any case, no trailing dot. 1 if relayed for. */
int conf_is_relay_domain(const struct conf *c, const char *domain, size_t len);
/*
 * Would a connection to sa (address and port) reach one of c's own
 * listeners? Yes when a listener has sa's address and port, or listens on
 * the wildcard address (0.0.0.0, ::) of sa's family on that port and local
 * is non-zero (sa's address belongs to this host: the caller knows, e.g.
 * from getifaddrs). An IPv4-mapped IPv6 sa counts as its IPv4 address.
 * Returns the listener or NULL. Pure.
 */
const struct conf_listen *conf_listener_for(const struct conf *c,
    const struct sockaddr *sa, int local);

/* Route for a recipient domain; never NULL (falls back to a static "* mx"). */
const struct conf_route *conf_route_for(const struct conf *c,
    const char *domain, size_t len);
/* Connection limit for destination name (any case): its dest-limit, else
 * max-dest-connections. */
unsigned conf_dest_limit_for(const struct conf *c, const char *name);

/*
 * The directive table, for tests and documentation: conf_directives() sets
 * *out to the table and returns its length. The table is the single source of
 * truth for names, defaults and bounds. A parse fn gets the words after the
 * name (argc already checked against minargs/maxargs), reports its own errors
 * and returns 0 or -1.
 */
struct conf_parser;              /* private to conf.c: one parse in progress */
struct conf_directive;
typedef int conf_directive_fn(struct conf_parser *p,
    const struct conf_directive *d, int argc, char **argv);

enum conf_value_type {
	CONF_T_UINT,                  /* unsigned, decimal */
	CONF_T_PORT,                  /* uint16_t, decimal */
	CONF_T_SIZE,                  /* uint64_t bytes: 35M, K M G base 1024 */
	CONF_T_DURATION,              /* unsigned seconds: 30s 5m 1h 2d */
	CONF_T_KEYWORD,               /* int: index of the word in d->words */
	CONF_T_STRING,                /* char *, checked by the parse fn */
	CONF_T_OTHER,                 /* lists and structured values */
};

#define CONF_D_LIST 0x01u         /* may repeat; values append */

struct conf_directive {
	const char *name;
	conf_directive_fn *parse;
	enum conf_value_type type;
	const char *def;              /* default, as written in tern.conf; NULL:
	                                 none, or derived (see struct conf) */
	uint64_t min, max;            /* bounds (numbers, sizes, durations) */
	size_t off;                   /* offsetof(struct conf, field) */
	const char *const *words;     /* CONF_T_KEYWORD values, NULL-ended */
	unsigned flags;               /* CONF_D_* */
	int minargs, maxargs;         /* maxargs -1: unbounded */
	const char *usage;            /* arguments, for error messages */
};

size_t conf_directives(const struct conf_directive **out);

/*
 * May authenticated user (lowercase) use envelope sender addr? Allowed:
 * the user's own name when it is that address, any address or @domain
 * listed for the user by sender-login, or anything with "*". The null
 * sender (addr "") is allowed to every authenticated user: read receipts
 * and vacation replies use it (RFC 3798, RFC 3834), and it claims no
 * address. Pure.
 */
int conf_sender_allowed(const struct conf *c, const char *user,
    const char *addr);

/*
 * May local user (login name) use envelope sender addr on the local socket?
 * Allowed: user@hostname itself, and what local-senders lists for the user
 * (an address, @domain or *). Root is the caller's business (always
 * allowed). Pure.
 */
int conf_local_sender_allowed(const struct conf *c, const char *user,
    const char *addr);

/* Names for human output. */
const char *conf_listen_mode_name(enum conf_listen_mode m);
const char *conf_tls_policy_name(enum conf_tls_policy p);
const char *conf_listen_tls_name(enum conf_listen_tls t);  /* "plain" ... */

#endif
