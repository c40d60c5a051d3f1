#!/usr/bin/env bash
# Builds the .deb and .rpm packages into dist/ with nfpm (packaging/nfpm.yaml):
#
#   scripts/package.sh                  linux/amd64
#   scripts/package.sh amd64 arm64 armv7
#
# The binary comes from scripts/build.sh, with the same version stamp. The
# package version is VERSION without a leading "v", or 0.0.0+git.<hash>
# when the tree has no version tag (dpkg versions start with a digit).
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM_VERSION=v2.45.0 # later releases need modules the Go proxy here refuses
nfpm=$(command -v nfpm || true)
if [ -z "$nfpm" ]; then
  gobin=$(go env GOPATH)/bin
  nfpm=$gobin/nfpm
  if [ ! -x "$nfpm" ]; then
    echo "scripts/package.sh: installing nfpm $NFPM_VERSION into $gobin"
    GOBIN=$gobin go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
  fi
fi

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
pkgversion=${VERSION#v}
if ! [[ $pkgversion =~ ^[0-9]+\.[0-9]+ ]]; then
  pkgversion=0.0.0+git.$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
export VERSION

archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64)
for arch in "${archs[@]}"; do
  scripts/build.sh "linux/$arch" >/dev/null
  nfpmarch=$arch
  [ "$arch" = armv7 ] && nfpmarch=arm7
  mkdir -p dist/package
  cp "dist/scanagent_${VERSION}_linux_${arch}" dist/package/scanagent
  for packager in deb rpm; do
    ARCH=$nfpmarch VERSION=$pkgversion "$nfpm" package --config packaging/nfpm.yaml --packager "$packager" --target dist/ >/dev/null
  done
  rm -r dist/package
done
ls -l dist/*.deb dist/*.rpm | awk '{ printf "%8.1f MB  %s\n", $5 / 1048576, $NF }'
