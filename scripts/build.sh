#!/usr/bin/env bash
# Cross-builds static release binaries into dist/:
#   scanagent_<version>_<os>_<arch>[.exe]
#
#   scripts/build.sh                          all targets
#   scripts/build.sh linux/arm64 windows/amd64
#   VERSION=1.2.0 scripts/build.sh            override the version
#
# Targets: linux/amd64 linux/arm64 linux/armv7 windows/amd64 (the default
# set; linux/arm means linux/armv7, GOARM=7); any other GOOS/GOARCH pair
# the Go toolchain knows also works. VERSION, COMMIT and DATE default to
# `git describe --tags --always --dirty`, the commit hash and the commit
# time in UTC. Fails if a binary is over 20 MB (MiB) or, on a linux/amd64
# host, if the linux/amd64 binary's `version` does not show the stamp.
set -euo pipefail
cd "$(dirname "$0")/.."

max_bytes=$((20 * 1024 * 1024))

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
DATE=${DATE:-$(TZ=UTC0 git log -1 --date='format-local:%Y-%m-%dT%H:%M:%SZ' --format=%cd 2>/dev/null || true)}
DATE=${DATE:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
for v in VERSION COMMIT DATE; do
  # They go into -ldflags and file names: no spaces or quotes.
  if ! [[ ${!v} =~ ^[A-Za-z0-9._:+-]+$ ]]; then
    echo "scripts/build.sh: $v='${!v}' may only contain letters, digits and . _ : + -" >&2
    exit 2
  fi
done

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(linux/amd64 linux/arm64 linux/armv7 windows/amd64)

ldflags="-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.buildDate=$DATE"
mkdir -p dist
files=()
for t in "${targets[@]}"; do
  goos=${t%%/*} arch=${t#*/}
  if [ -z "$goos" ] || [ -z "$arch" ] || [ "$goos" = "$t" ]; then
    echo "scripts/build.sh: target '$t' is not OS/ARCH (e.g. linux/arm64)" >&2
    exit 2
  fi
  goarch=$arch goarm=
  case $arch in
    arm | armv7) goarch=arm goarm=7 arch=armv7 ;;
    armv6) goarch=arm goarm=6 ;;
  esac
  ext=
  [ "$goos" = windows ] && ext=.exe
  out=dist/scanagent_${VERSION}_${goos}_${arch}${ext}
  CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=$goarm \
    go build -trimpath -ldflags "$ldflags" -o "$out" ./cmd/scanagent
  files+=("$goos/$arch $out")
done

fail=0
printf '%-15s %8s  %s\n' target size file
for f in "${files[@]}"; do
  t=${f%% *} out=${f#* }
  bytes=$(wc -c <"$out" | tr -d ' ')
  mark=
  if [ "$bytes" -gt "$max_bytes" ]; then
    mark="  OVER $((max_bytes / 1024 / 1024)) MB"
    fail=1
  fi
  printf '%-15s %5s MB  %s%s\n' "$t" "$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')" "$out" "$mark"
done
[ "$fail" -eq 0 ] || { echo "scripts/build.sh: binary over the size limit" >&2; exit 1; }

# Check the stamp on the binary this host can run.
native=dist/scanagent_${VERSION}_linux_amd64
if [ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] && [[ " ${targets[*]} " == *" linux/amd64 "* ]]; then
  got=$("$native" version)
  for want in "scanagent $VERSION " "commit $COMMIT," "built $DATE,"; do
    if [[ $got != *"$want"* ]]; then
      echo "scripts/build.sh: $native version printed '$got'; want it to contain '$want'" >&2
      exit 1
    fi
  done
  echo "stamp ok: $got"
fi
