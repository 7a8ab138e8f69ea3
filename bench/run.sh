#!/usr/bin/env bash
# Runs the benchmark as the README describes: installs nginx (the plain-proxy
# baseline) if it is missing and this is a Debian/Ubuntu machine we may
# install on, builds in release mode, and runs tinyscale-bench.
#   bash bench/run.sh [--quick] [--out FILE] [--instructions]
#   bash bench/run.sh --soak MINUTES [--out FILE]
# --soak runs a steady mixed load for MINUTES instead (one server down and up
# every minute, slow and vanishing clients), samples tinyscale's memory and
# open files every second, and exits 1 if memory grew by more than 10% after
# the first minute or any error other than the expected ones came back.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/sbin/nginx ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  else
    echo "nginx is not installed (sudo apt-get install nginx-light); its column will stay empty" >&2
  fi
fi
# The rows with Redis (several instances' shared state) need redis-server.
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi
  else
    echo "redis-server is not installed (sudo apt-get install redis-server); the rows with Redis are left out" >&2
  fi
fi
# --instructions counts instructions under valgrind's callgrind.
if [[ " $* " == *" --instructions "* ]] && ! command -v valgrind >/dev/null 2>&1 \
  && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
  else
    echo "valgrind is not installed (sudo apt-get install valgrind)" >&2
    exit 1
  fi
fi
# Debian starts the packaged nginx on port 80; the benchmark runs its own.
cargo build --release --locked --bin tinyscale --bin tinyscale-bench
exec target/release/tinyscale-bench "$@"
