#!/bin/sh
# The packages of etc/debian-packages, one per line, for apt-get install.
# A machine that already has node and npm from elsewhere (nodesource's
# nodejs ships its own npm and conflicts with Debian's npm) keeps them:
# the tests only need a working `npm`.
set -eu
cd "$(dirname "$0")"
if command -v npm >/dev/null 2>&1; then
    grep -v '^#' debian-packages | grep -vx -e nodejs -e npm
else
    grep -v '^#' debian-packages
fi
