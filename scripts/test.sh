#!/usr/bin/env bash
# Set up and run the whole test suite against a real Kafka broker and a real PostgreSQL.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not slow"`).
# It starts a test broker on :29092 and PostgreSQL on :55432 unless OKR_TEST_KAFKA /
# OKR_TEST_POSTGRES_URL point at running ones, and stops what it started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
ensure_venv
require_chromium

started_kafka=0; started_postgres=0
export OKR_LOCAL_KAFKA_PORT=29092 OKR_LOCAL_KAFKA_CONTROLLER_PORT=29093
export OKR_LOCAL_KAFKA_DATA_DIR="$root/var/test-kafka"
cleanup() {
  [ "$started_kafka" = 1 ] && okr kafka stop >/dev/null || true
  [ "$started_postgres" = 1 ] && scripts/postgres.sh stop || true
}
trap cleanup EXIT

if [ -z "${OKR_TEST_KAFKA:-}" ]; then
  require_java_and_maven
  rm -rf "$OKR_LOCAL_KAFKA_DATA_DIR"   # a fresh broker: no state leaks between runs
  okr kafka start
  started_kafka=1
  export OKR_TEST_KAFKA="127.0.0.1:29092"
fi
if [ -z "${OKR_TEST_POSTGRES_URL:-}" ]; then
  OKR_TEST_POSTGRES_URL="$(scripts/postgres.sh start)"
  started_postgres=1
  export OKR_TEST_POSTGRES_URL
fi
python -m pytest "$@"
