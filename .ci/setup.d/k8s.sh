#!/usr/bin/env bash
# Builds the Kubernetes control plane used by platforms/kube tests (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kwok) from Go
# modules, once per tools-module hash, into
#   $ROLLBOT_CACHE/k8s-<hash>/bin
# and appends ROLLBOT_K8S_BIN=<dir> to $ENVFILE when that is set.
# Idempotent: skips the build when the directory already exists.
# The hash must match testkit/kubetest (toolsHash): sha256 over
# .ci/k8s-tools/go.sum, .ci/etcd-tools/go.sum and "kwok $KWOK_VERSION\n",
# first 16 hex digits. Prints only the bin directory on stdout.
# kwok's Stages are not needed here: testkit/kubetest embeds them.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

KWOK_VERSION=v0.8.0 # keep in sync with kubetest.KwokVersion
K8S_VERSION=v1.37.2 # keep in sync with .ci/k8s-tools/go.mod
ROLLBOT_CACHE=${ROLLBOT_CACHE:-/var/cache/rollbot}

hash=$( { cat .ci/k8s-tools/go.sum .ci/etcd-tools/go.sum; printf 'kwok %s\n' "$KWOK_VERSION"; } | sha256sum | cut -c1-16)
dir="$ROLLBOT_CACHE/k8s-$hash"
bin="$dir/bin"

mkdir -p "$ROLLBOT_CACHE"
# One build at a time: a second caller (a test package's TestMain while
# CI's own setup builds) waits for the first and then finds its result,
# instead of compiling the same ~2000 packages beside it.
exec 9>"$ROLLBOT_CACHE/.k8s-build.lock"
flock 9
if [ ! -d "$bin" ]; then
	tmp=$(mktemp -d "$ROLLBOT_CACHE/.k8s-build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/bin"
	minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
	start=$SECONDS
	echo "k8s.sh: building etcd" >&2
	(cd .ci/etcd-tools && go build -trimpath -ldflags="-s -w" -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3)
	echo "k8s.sh: building kwok $KWOK_VERSION" >&2
	GOBIN="$tmp/bin" GOFLAGS= go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
	for t in kube-scheduler kube-controller-manager kube-apiserver; do
		echo "k8s.sh: building $t $K8S_VERSION" >&2
		(cd .ci/k8s-tools && go build -trimpath -ldflags="$ldflags" -o "$tmp/bin/$t" "k8s.io/kubernetes/cmd/$t")
	done
	chmod -R a+rX "$tmp"
	# Another run may have finished first: keep its directory.
	if mv -T "$tmp" "$dir" 2>/dev/null; then trap - EXIT; fi
	[ -d "$bin" ] || { echo "k8s.sh: $bin missing after the build" >&2; exit 1; }
	echo "k8s.sh: built in $((SECONDS - start)) s into $bin" >&2
fi

if [ -n "${ENVFILE:-}" ]; then
	echo "ROLLBOT_K8S_BIN=$bin" >>"$ENVFILE"
fi
echo "$bin"
