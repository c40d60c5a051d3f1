#!/bin/sh
# The agent runs as its own system user, in the dialout group for the
# serial ports.
set -e
if ! getent group scanagent >/dev/null; then
  groupadd --system scanagent
fi
if ! getent passwd scanagent >/dev/null; then
  useradd --system --gid scanagent --groups dialout --home-dir /var/lib/scanagent \
    --no-create-home --shell /usr/sbin/nologin --comment "scanagent parcel scan agent" scanagent
else
  usermod -a -G dialout scanagent
fi
