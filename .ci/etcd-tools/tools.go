// Package etcdtools only exists so that this module has a package; the
// binary is listed as a tool directive in go.mod.
package etcdtools
