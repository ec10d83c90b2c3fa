#!/usr/bin/env bash
# Measures the memory of `rollbot serve` with deploy/rollbot.example.yaml
# (all six platforms), the issue's condition for idle memory. The example's
# files are replaced by local stand-ins: kubeconfigs naming an API server
# that does not answer (the clients are built, the access check fails and
# says so), an SSH key and known_hosts, the migrations directory and smoke
# script, and a throwaway PostgreSQL for the database it names (it must
# answer). Run as root on Debian with postgresql installed (.ci/run
# installs it):
#
#	bash bench/ackload/example-idle.sh [-runs 3] [-idlefor 2s]
set -euo pipefail
cd "$(dirname "$0")/../.."
T=$(mktemp -d)
chmod 755 "$T"
PG=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
cleanup() {
	[ -f "$T/pg/postmaster.pid" ] && runuser -u postgres -- "$PG/pg_ctl" -D "$T/pg" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$T"
}
trap cleanup EXIT

for c in east staging; do
	cat >"$T/kubeconfig-$c" <<KUBE
apiVersion: v1
kind: Config
clusters: [{name: $c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: rollbot, user: {token: stand-in-token-$c}}]
contexts: [{name: $c, context: {cluster: $c, user: rollbot}}]
current-context: $c
KUBE
done
ssh-keygen -q -t ed25519 -N '' -f "$T/id_ed25519"
: >"$T/known_hosts"
mkdir -p "$T/migrations" "$T/smoke"
printf '#!/bin/sh\nexit 0\n' >"$T/smoke/myapp.sh"
chmod +x "$T/smoke/myapp.sh"
sed -e "s|/etc/rollbot/|$T/|g" -e "s|/opt/billing/migrations|$T/migrations|g" -e "s|/opt/rollbot/smoke/|$T/smoke/|g" \
	deploy/rollbot.example.yaml >"$T/rollbot.yaml"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$T/pg"
chown postgres "$T/pg"
runuser -u postgres -- "$PG/initdb" -D "$T/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PG/pg_ctl" -D "$T/pg" -w -o "-p $PORT -k $T/pg -c listen_addresses=127.0.0.1" -l "$T/pg/log" start >/dev/null
DSN="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"

BILLING_DB_DSN=$DSN BILLING_MIGRATE_DSN=$DSN \
	ROLLBOT_ALERTMANAGER_TOKEN=stand-in-alert-token-0123456789 \
	ROLLBOT_REGISTRY_USER=stand-in ROLLBOT_REGISTRY_PASSWORD=stand-in-password \
	AWS_ACCESS_KEY_ID=AKIDSTANDIN AWS_SECRET_ACCESS_KEY=stand-in-secret AWS_REGION=eu-west-1 \
	go run ./bench/ackload -idle "$T/rollbot.yaml" "$@"
