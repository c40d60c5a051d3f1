#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
# The buffer in /var/lib/scanagent may hold scans not yet delivered: it is
# never removed by the package. Check it with "scanagent buffer stats", then
# delete it by hand.
case "$1" in
  purge)
    [ -d /var/lib/scanagent ] && echo "scanagent: /var/lib/scanagent kept (it may hold undelivered scans)"
    ;;
esac
exit 0
