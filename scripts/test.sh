#!/usr/bin/env bash
# The full test suite: installs what the tests need (mosquitto, the real
# broker the end-to-end tests start on a free loopback port; chromium for
# the console's browser tests; PostgreSQL), then vets and
# runs every test with the race detector, the chaos suite, the release
# builds and the package tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "scripts/test.sh: installing mosquitto (needed by the end-to-end tests)"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
fi

# Chromium for the technician console's browser tests (chromedp drives
# it headless; cmd/scanagent TestConsoleInBrowser fails without it).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "scripts/test.sh: installing chromium (needed by the console's browser tests)"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

# PostgreSQL for the reference receiver's tests (central/, cmd/scanreceiver):
# they run initdb and pg_ctl from /usr/lib/postgresql/<version>/bin in a
# temporary directory, as the postgres user the package creates.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  echo "scripts/test.sh: installing postgresql (needed by the receiver's tests)"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
go vet ./...
GOOS=windows go vet ./...
go vet -tags chaos ./cmd/scanagent
go mod tidy -diff
staticcheck=$(go env GOPATH)/bin/staticcheck
if [ ! -x "$staticcheck" ]; then
  echo "scripts/test.sh: installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
"$staticcheck" ./...
GOOS=windows "$staticcheck" ./...
go test -race -count=1 -timeout 10m ./...

# The chaos suite: the real binary and mosquitto under faults (agent kill -9,
# broker restarts and a 2-minute outage, a proxy that cuts and stalls,
# scanner unplug, disk full, corrupt store; each buffer file damaged, a
# small disk filled, an event the broker refuses; hostile HTTP clients and
# configs). About 6 minutes.
go test -tags chaos -run Chaos -count=1 -timeout 15m ./cmd/scanagent

# Release builds: static binaries for linux/amd64, linux/arm64, linux/armv7
# and windows/amd64 with the version stamped (each checked under 20 MB),
# then the .deb and .rpm: contents, install, the agent run from /usr/bin as
# the service user, and systemd-analyze verify of the unit.
scripts/build.sh
scripts/test-package.sh
