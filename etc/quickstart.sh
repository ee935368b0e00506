#!/bin/sh
# etc/quickstart.sh - README command one: install the Debian packages, build
# tern, write a local demo configuration under ./demo (unprivileged loopback
# ports, queue in ./demo/queue, a self-signed certificate, a demo user), print
# how to send a first message, then run ternd in the foreground (Ctrl-C stops it).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

if [ "${TERN_SKIP_APT:-0}" != 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    # postfix (for the tests' private instances): "No configuration", no system instance
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q $(etc/debian-packages.sh)
fi

[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build

demo="$top/demo"
mkdir -p "$demo"
if [ ! -f "$demo/cert.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
        -keyout "$demo/key.pem" -out "$demo/cert.pem" 2>/dev/null
    chmod 600 "$demo/key.pem"
fi
sed "s|@DIR@|$demo|g" etc/demo.conf.in > "$demo/tern.conf"
mkdir -p "$demo/queue"
if [ "$(id -u)" -eq 0 ]; then
    # ternd never keeps root: give it a system user of its own.
    getent passwd tern >/dev/null || useradd --system --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tern
    echo "user tern" >> "$demo/tern.conf"
    chown tern "$demo/queue"
fi
printf 'demo\n' | ./build/ternctl -c "$demo/tern.conf" user add demo@localhost >/dev/null
./build/ternd -n -c "$demo/tern.conf"

cat <<MSG

tern is starting in the foreground with $demo/tern.conf
(relay on 127.0.0.1:2525, submission on 127.0.0.1:2587 (STARTTLS) and
127.0.0.1:2465 (TLS), queue in $demo/queue).

Send a first message from another terminal, as the demo user over STARTTLS:

  swaks --server 127.0.0.1:2587 --tls --auth PLAIN \\
        --auth-user demo@localhost --auth-password demo \\
        --from demo@localhost --to someone@example.com

or, as an MTA would, to the relay port:

  swaks --server 127.0.0.1:2525 --from you@localhost --to postmaster@example.com

Look at the queue:

  $top/build/ternctl -c $demo/tern.conf queue

Outbound mail goes to 127.0.0.1:2526; to watch it arrive, run a sink there:

  /usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:2526 -c aiosmtpd.handlers.Debugging

Ctrl-C stops ternd.
MSG
exec ./build/ternd -c "$demo/tern.conf"
