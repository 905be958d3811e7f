#!/bin/sh
# examples/demo-cli.sh - the same kind of swarm as examples/demo.lua, with
# the `odo` command alone: three `odo run` nodes in a line (n1 <- n2 <- n3,
# where n3 never meets n1), an `odo append` on n1, `odo status` on the far
# end, `odo verify` there, and a clean stop. Run by `make demo` after the
# Lua demo; exits non-zero on any failure. Everything lives in a temporary
# folder, removed on every way out.
set -u
cd "$(dirname "$0")/.." || exit 1
ODO=${ODO:-bin/odo}
T=$(mktemp -d /tmp/odo-demo.XXXXXX)
PIDS=""
cleanup() {
  for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
say() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'demo-cli failed: %s\n' "$*" >&2
  for n in n1 n2 n3; do [ -f "$T/$n.log" ] && { echo "--- $n's log" >&2; cat "$T/$n.log" >&2; }; done
  exit 1
}
# waits up to $1 tenths of a second for the command after it to succeed
within() {
  tries=$1
  shift
  while ! "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.1
  done
}

say "odo cert: a CA, and one certificate per node (the node id is its key's hash)"
"$ODO" cert ca --out "$T/ca" >/dev/null || fail "odo cert ca"
for n in n1 n2 n3; do
  id=$("$ODO" cert node --ca "$T/ca" --out "$T/$n" --name "$n") || fail "odo cert node $n"
  eval "${n}_id=$id"
  echo "  $n: $id"
done

# starts `odo run` for node $1 on a free port, dialling port $2 if given;
# sets ${1}_port once the node says where it listens
start() {
  peer=""
  [ -n "${2:-}" ] && peer="--peer 127.0.0.1:$2"
  # shellcheck disable=SC2086
  "$ODO" run --dir "$T/$1" --listen 127.0.0.1:0 --ca "$T/ca/ca.pem" --cert "$T/$1/node.pem" \
    --key "$T/$1/node.key" $peer 2>"$T/$1.log" &
  PIDS="$PIDS $!"
  eval "${1}_pid=$!"
  within 100 grep -q "listening on" "$T/$1.log" || fail "$1 did not start"
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/$1.log")
  eval "${1}_port=$port"
  echo "  $1 listens on 127.0.0.1:$port${2:+, dials 127.0.0.1:$2}"
}

say "odo run: three nodes in a line, n1 <- n2 <- n3 (n3 only knows n2)"
start n1
start n2 "$n1_port"
start n3 "$n2_port"

say "odo append: n1 writes two events to its own stream (durable when the command returns)"
"$ODO" append --dir "$T/n1" "hello from n1" "n3 gets this through n2" || fail "odo append"

say "n3 receives them through n2, each batch checked against n1's signature"
has_both() { [ "$("$ODO" tail --dir "$T/n3" "$n1_id" 2>/dev/null | grep -c '"type"')" -ge 2 ]; }
within 300 has_both || fail "n3 did not receive n1's events"
"$ODO" tail --dir "$T/n3" "$n1_id"

say "odo status on n3, the far end: its peers and the streams it holds (with their upstream)"
"$ODO" status --dir "$T/n3" || fail "odo status"

say "odo verify on n3: every chain, signed head and snapshot signature"
"$ODO" verify --dir "$T/n3" || fail "odo verify"

say "a clean stop: SIGTERM, each node says goodbye to its peers and closes its store"
for n in n3 n2 n1; do
  eval "pid=\$${n}_pid"
  kill -TERM "$pid"
  wait "$pid" || fail "$n did not stop cleanly"
  echo "  $n stopped (exit status 0)"
done
echo "  n3's log said, when it had caught up:"
grep "caught up with the swarm" "$T/n3.log" | sed 's/^/    /'
PIDS=""
echo
echo "demo-cli ok"
