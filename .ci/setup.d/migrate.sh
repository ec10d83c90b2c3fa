#!/usr/bin/env bash
# Builds golang-migrate's CLI (postgres + mysql drivers) for the database
# rollback tests in platforms/migrations, caches it under $ROLLBOT_CACHE/bin
# and exports its path as ROLLBOT_MIGRATE_BIN. Idempotent.
set -euo pipefail
MIGRATE_VERSION=v4.20.1
CACHE=${ROLLBOT_CACHE:-/var/cache/rollbot}
BIN="$CACHE/bin/migrate-$MIGRATE_VERSION"
if [ ! -x "$BIN" ]; then
	mkdir -p "$CACHE/bin"
	tmp=$(mktemp -d)
	GOBIN="$tmp" CGO_ENABLED=0 go install -tags 'postgres mysql' \
		"github.com/golang-migrate/migrate/v4/cmd/migrate@$MIGRATE_VERSION"
	mv "$tmp/migrate" "$BIN"
	rm -rf "$tmp"
fi
"$BIN" -version
if [ -n "${ENVFILE:-}" ]; then
	echo "ROLLBOT_MIGRATE_BIN=$BIN" >>"$ENVFILE"
fi
