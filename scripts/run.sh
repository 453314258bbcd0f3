#!/usr/bin/env bash
# Set up and run the service on this machine: local Kafka (KRaft) + SQLite stores + HTTP on :8000.
# Ctrl-C stops the service; `.venv/bin/okr kafka stop` stops the broker.
#   scripts/run.sh [okr serve options]
#   scripts/run.sh --demo [okr demo options]   the service, plus the seed's scenario played live
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
ensure_venv
require_java_and_maven
(umask 077 && mkdir -p var)  # the stores, the keys and the broker's data: its owner's only
okr kafka start

# Every endpoint but /health needs an API key. First run: an admin key, only its hash in the keys
# file (OKR_API_KEYS_FILE, var/api-keys.json), its plaintext in var/admin.key (mode 600).
# To replace it: `okr keys revoke --principal admin`, delete var/admin.key, run this again.
admin_key=var/admin.key
if [ ! -s "$admin_key" ]; then
  mkdir -p var
  (umask 077 && okr keys add --principal admin --role admin >"$admin_key.new")
  mv "$admin_key.new" "$admin_key"
  echo "Created an admin API key in $admin_key."
fi
echo "Call the API with it, e.g.:"
echo "  curl -H \"Authorization: Bearer \$(cat $admin_key)\" http://${OKR_HTTP_HOST:-127.0.0.1}:${OKR_HTTP_PORT:-8000}/objectives"

if [ "${1:-}" != "--demo" ]; then
  exec okr serve "$@"
fi
shift

# The service in the background, the demo against it, then the service kept until Ctrl-C.
okr serve &
serve_pid=$!
stop_service() {
  trap - EXIT INT TERM
  kill -TERM "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
}
trap stop_service EXIT
trap 'stop_service; exit 130' INT
trap 'stop_service; exit 143' TERM

okr demo --wait-for-service 120 "$@"
echo "The service keeps running; Ctrl-C stops it."
wait "$serve_pid"
