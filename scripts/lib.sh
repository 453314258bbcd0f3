# Shared by the scripts: a virtualenv in .venv with the project installed (editable, with dev tools).
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

pick_python() {
  local candidate
  for candidate in "${OKR_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "Python 3.11 or newer is required" >&2; exit 1
}

ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    "$(pick_python)" -m venv "$venv"
  fi
  local stamp="$venv/.installed"
  if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$root[dev]"
    touch "$stamp"
  fi
  export PATH="$venv/bin:$PATH"
}

require_java_and_maven() {
  # The local Kafka broker needs a Java 17+ runtime and Maven to resolve its jars.
  if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" != 0 ]; then
    echo "java and mvn are needed for the local Kafka: install openjdk-17-jre-headless and maven" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
}

require_chromium() {
  # The browser tests drive Debian's headless Chromium and its driver (tests/browser/); nothing
  # downloads a browser of its own. With CI=true a missing browser fails the run.
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return; fi
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    return
  fi
  if [ "${CI:-}" = true ]; then
    echo "CI=true but chromium and chromedriver are missing: apt-get install chromium chromium-driver" >&2
    exit 1
  fi
  echo "chromium and chromedriver are missing: the browser tests will be skipped" >&2
}
