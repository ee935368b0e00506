/*
 * ternctl_dkim.h - private to ternctl: the "dkim" commands (see
 * ternctl_dkim.c).
 */
#ifndef TERN_TERNCTL_DKIM_H
#define TERN_TERNCTL_DKIM_H

#define TERNCTL_DKIM_CONF "/etc/tern/tern.conf"

/*
 * If argv (ternctl's, options first) names the dkim command, run it: 1
 * with the exit code in *rc. 0 for any other command.
 */
int ternctl_dkim_main(int argc, char **argv, int *rc);

#endif
