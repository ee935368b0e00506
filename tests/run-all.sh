#!/bin/sh
# tests/run-all.sh - every test of tern, in the order that fails fastest:
#   1. debugoptimized build (-Werror) + cmocka unit tests, cppcheck, and a
#      --buildtype=release build (-O3, NDEBUG, Debian's hardening flags) with
#      its unit tests, as a packager would build it
#   2. integration tests (pytest) against the real ternd of that build,
#      with the Debian package build (test_package.py: dpkg-buildpackage,
#      lintian, the unpacked package run; minutes, so only in this run:
#      it skips itself under TERN_SANITIZED)
#   3. ASan+UBSan build: unit + integration tests again
#   4. libFuzzer targets (clang), a short run each over the seed corpus
# Exit status is non-zero if any step fails. Run from anywhere.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
PY=/usr/bin/python3
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
failed=""

step() { printf '\n==== %s\n' "$*"; }

step "build (build/)"
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build

step "unit tests"
meson test -C build --print-errorlogs || failed="$failed unit"

step "cppcheck"
sh tests/cppcheck.sh || failed="$failed cppcheck"

step "release build (build-release/) and its unit tests"
# with Debian's hardening flags (_FORTIFY_SOURCE, stack protector...), as
# the package is built, and -Werror still on: a warning they bring fails here
hard() { DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get "$1" 2>/dev/null || true; }
[ -f build-release/build.ninja ] || meson setup build-release \
    --buildtype=release -Dc_args="$(hard CFLAGS) $(hard CPPFLAGS)" \
    -Dc_link_args="$(hard LDFLAGS)" >/dev/null
if ninja -C build-release; then
    meson test -C build-release --print-errorlogs || failed="$failed unit-release"
else
    failed="$failed build-release"
fi

step "integration tests"
TERN_BUILD_DIR="$top/build" $PY -m pytest -q tests/integration || failed="$failed integration"

step "ASan+UBSan build (build-asan/)"
[ -f build-asan/build.ninja ] || meson setup build-asan -Dbuildtype=debug \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
ninja -C build-asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

step "unit tests under ASan+UBSan"
meson test -C build-asan --print-errorlogs || failed="$failed unit-asan"

step "integration tests under ASan+UBSan"
TERN_BUILD_DIR="$top/build-asan" TERN_SANITIZED=1 $PY -m pytest -q tests/integration \
    || failed="$failed integration-asan"

step "fuzz targets (${FUZZ_SECONDS}s each)"
[ -f build-fuzz/build.ninja ] || CC=clang meson setup build-fuzz -Dfuzz=true \
    -Dbuildtype=debugoptimized -Db_lundef=false >/dev/null
ninja -C build-fuzz
for f in build-fuzz/tests/fuzz/fuzz_*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    name=$(basename "$f" | sed 's/^fuzz_//')
    work=$(mktemp -d)
    [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$work/"
    if "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 "$work" \
        >"$work.log" 2>&1; then
        echo "fuzz $name: ok"
    else
        echo "fuzz $name: FAILED"; tail -40 "$work.log"
        failed="$failed fuzz-$name"
    fi
    rm -rf "$work" "$work.log"
done

if [ -n "$failed" ]; then
    printf '\nFAILED:%s\n' "$failed"
    exit 1
fi
printf '\nall tests passed\n'
