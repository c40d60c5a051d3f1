#!/bin/sh
set -e
install -d -o scanagent -g scanagent -m 0750 /var/lib/scanagent
chgrp scanagent /etc/scanagent/scanagent.yaml 2>/dev/null || true
chmod 0640 /etc/scanagent/scanagent.yaml 2>/dev/null || true
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable scanagent.service >/dev/null 2>&1 || true
  # Start on first install, restart on upgrade; a config that does not
  # check keeps it stopped (ExecStartPre) and says why in the journal.
  systemctl restart scanagent.service || echo "scanagent: not started: see journalctl -u scanagent and scanagent check -c /etc/scanagent/scanagent.yaml"
fi
echo "scanagent: edit /etc/scanagent/scanagent.yaml, then: systemctl reload scanagent (stations) or restart (other sections)"
