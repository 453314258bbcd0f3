#!/usr/bin/env bash
# Set up and run the service on this machine: local Kafka (KRaft) + SQLite stores + HTTP on :8000.
# Ctrl-C stops the service; `.venv/bin/okr kafka stop` stops the broker.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$root"
ensure_venv
require_java_and_maven
okr kafka start
exec okr serve "$@"
