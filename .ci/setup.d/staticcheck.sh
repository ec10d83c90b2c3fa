#!/usr/bin/env bash
# Builds staticcheck (the linter .ci/run runs after go vet) into
# $ROLLBOT_CACHE/bin once per version and exports its path.
set -euo pipefail
VERSION=v0.8.2
CACHE=${ROLLBOT_CACHE:-/var/cache/rollbot}
BIN="$CACHE/bin/staticcheck-$VERSION"
if [ ! -x "$BIN" ]; then
	mkdir -p "$CACHE/bin"
	tmp=$(mktemp -d)
	GOFLAGS= GOBIN="$tmp" go install "honnef.co/go/tools/cmd/staticcheck@$VERSION"
	mv "$tmp/staticcheck" "$BIN"
	rm -rf "$tmp"
fi
if [ -n "${ENVFILE:-}" ]; then
	echo "ROLLBOT_STATICCHECK=$BIN" >>"$ENVFILE"
fi
