#!/bin/sh
# cppcheck over the daemon's sources (base/ resolver/ queue/ smtpd/). Run
# from the repo root. Prints every finding (severities error, warning, performance,
# portability); exits 1 if any has severity "error" (syntax errors
# included), 77 (meson's "skipped") if cppcheck is not installed.
#
# System headers are not given to cppcheck (it has its own models of libc
# and POSIX), except <sys/queue.h>: its TAILQ_* macros declare struct
# members, which cppcheck cannot parse unexpanded, so the real header is
# force-included. The resulting "system header not found" notes are the
# only thing suppressed. Silence a false positive at its line with
# "// cppcheck-suppress <id>" (--inline-suppr).
set -u

if ! command -v cppcheck >/dev/null 2>&1; then
	echo "cppcheck.sh: cppcheck not installed, skipped" >&2
	exit 77
fi

queue_h=
for d in /usr/include "/usr/include/$(${CC:-cc} -print-multiarch 2>/dev/null)"; do
	if [ -f "$d/sys/queue.h" ]; then
		queue_h=$d/sys/queue.h
		break
	fi
done
if [ -z "$queue_h" ]; then
	echo "cppcheck.sh: sys/queue.h not found" >&2
	exit 1
fi

out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT

cppcheck --quiet -j "$(nproc 2>/dev/null || echo 2)" --std=c11 \
    --enable=warning,performance,portability \
    --error-exitcode=2 --inline-suppr \
    --suppress=missingIncludeSystem \
    -I include --include="$queue_h" \
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
    base resolver queue smtpd >"$out" 2>&1
rc=$?
cat "$out"

case $rc in
0)	exit 0 ;;
2)	# something was reported: fail only on error severity
	if grep -q '^[^ ]*:[0-9]*:[0-9]*: error: ' "$out"; then
		exit 1
	fi
	exit 0 ;;
*)	echo "cppcheck.sh: cppcheck failed (exit $rc)" >&2
	exit 1 ;;
esac
