#!/usr/bin/env bash
# Builds the .deb and .rpm for this machine's architecture and checks them:
# the package contents, then (as root, on Debian) an install with apt, the
# user, the data directory, the binary run from the install path as the
# service user until it answers "scanagent status", and
# `systemd-analyze verify` of the installed unit when systemd-analyze is
# there. Without systemd running (CI containers) the service is not
# started by the package; the agent is run by hand instead.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=$(go env GOARCH)
scripts/package.sh "$arch"
deb=$(ls -t dist/scanagent_*_"$arch".deb | head -1)
rpm=$(ls -t dist/scanagent-*.rpm | head -1)

fail() { echo "scripts/test-package.sh: $*" >&2; exit 1; }

contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/scanagent ./lib/systemd/system/scanagent.service ./etc/scanagent/scanagent.yaml \
  ./usr/share/doc/scanagent/examples/99-scanagent.rules ./var/lib/scanagent/; do
  grep -q " $f\$" <<<"$contents" || fail "$deb lacks $f"
done
dpkg-deb -f "$deb" Package Version Architecture Depends
[ "$(dpkg-deb -I "$deb" conffiles)" = /etc/scanagent/scanagent.yaml ] || fail "the config is not a conffile"
if command -v rpm >/dev/null; then
  rpm -qlp "$rpm" | grep -qx /usr/bin/scanagent || fail "$rpm lacks /usr/bin/scanagent"
else
  [ -s "$rpm" ] || fail "$rpm is empty"
fi
echo "package contents ok: $deb, $rpm"

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "scripts/test-package.sh: not root on Debian: install test skipped"
  exit 0
fi

DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
trap 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq scanagent >/dev/null 2>&1 || true' EXIT
id -nG scanagent | tr ' ' '\n' | grep -qx dialout || fail "user scanagent is not in dialout"
[ "$(stat -c %U:%a /var/lib/scanagent)" = scanagent:750 ] || fail "/var/lib/scanagent: $(stat -c %U:%a /var/lib/scanagent)"
[ "$(stat -c %G:%a /etc/scanagent/scanagent.yaml)" = scanagent:640 ] || fail "config: $(stat -c %G:%a /etc/scanagent/scanagent.yaml)"
/usr/bin/scanagent version
/usr/bin/scanagent check -c /etc/scanagent/scanagent.yaml

if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify /lib/systemd/system/scanagent.service
  echo "systemd-analyze verify: ok"
fi

# The service as systemd would run it, by hand: the service user, the data
# directory, the example config (its ports and broker do not exist here,
# so status reports them: exit 3).
log=$(mktemp)
setpriv --reuid=scanagent --regid=scanagent --init-groups /usr/bin/scanagent run -c /etc/scanagent/scanagent.yaml 2>"$log" &
pid=$!
code=1
for _ in $(seq 1 50); do
  code=0
  /usr/bin/scanagent status -c /etc/scanagent/scanagent.yaml >/dev/null 2>&1 || code=$?
  [ "$code" -ne 1 ] && break
  sleep 0.2
done
kill -TERM "$pid"
wait "$pid" || fail "the agent exited with $? after SIGTERM; log: $(cat "$log")"
[ "$code" -eq 0 ] || [ "$code" -eq 3 ] || fail "status exit $code; log: $(cat "$log")"
[ -d /var/lib/scanagent/buffer ] || fail "no buffer in /var/lib/scanagent"
echo "installed agent ran as scanagent from /usr/bin and answered status (exit $code)"
rm -f "$log"
