#!/usr/bin/env bash
# The benchmarks behind docs/BENCHMARKS.md, docs/BUFFER.md and docs/MQTT.md.
# Needs mosquitto (scripts/test.sh installs it). About 9 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
go run ./cmd/scanbench -live 20s -backlog 1000000 -json "${1:-/tmp/scanbench.json}"
go test -run '^$' -bench 'AppendSerial|Append16Writers/window=0|Submit16' -benchtime 3s ./buffer
go test -run '^$' -bench AppendLatency2k -benchtime 20000x ./buffer
go test -run '^$' -bench Backlog1M -benchtime 1x ./buffer
go test -run '^$' -bench 'BenchmarkDrain$|LiveWhileDraining' -benchtime 1x ./agent
go test -run '^$' -bench EndToEnd -benchtime 100000x ./agent
go test -run '^$' -bench 'ScaleReader|Framer' -benchtime 2s ./devices
go run ./cmd/portbench -duration 10s
