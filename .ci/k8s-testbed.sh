#!/usr/bin/env bash
# Starts rollbot's Kubernetes testbed by hand (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok on random 127.0.0.1 ports),
# building the binaries first if needed (≈10 min cold, cached after), and
# prints the kubeconfig path. ^C stops it.
#   .ci/k8s-testbed.sh          # empty cluster
#   .ci/k8s-testbed.sh -demo    # + namespace prod, Deployment myapp, rollbot's Role and kubeconfig
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./testkit/kubetest/cmd/k8s-testbed "$@"
