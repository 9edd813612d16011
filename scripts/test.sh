#!/usr/bin/env bash
# Runs every test suite. The Redis and clustered-mode suites start private redis-server
# processes on loopback ports, so redis-server is installed first when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server (needed by SOPRedisTests and SOPClusterTests)" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
swift test "$@"
