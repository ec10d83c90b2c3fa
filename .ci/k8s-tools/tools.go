// Package k8stools only exists so that this module has a package; the
// binaries are listed as tool directives in go.mod.
package k8stools
