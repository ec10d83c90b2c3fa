#!/usr/bin/env bash
# The Argo CD and Flux CRDs that the Kubernetes tests install come from the
# projects' own Go modules (testkit/kubetest/crds.go names the same modules
# and versions). Download them into the module cache once, so the tests find
# them there; Flux's go.mod needs a newer toolchain for the download only.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
go mod download github.com/argoproj/argo-cd/v3@v3.4.5
GOTOOLCHAIN=go1.27.3 go mod download github.com/fluxcd/kustomize-controller@v1.10.1 github.com/fluxcd/source-controller@v1.10.1
