package main

import (
	"strings"
	"testing"
)

func TestRunPrintsFailuresAndSlowest(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"start","Package":"p"}`,
		`{"Action":"run","Package":"p","Test":"TestOK"}`,
		`{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}`,
		`{"Action":"output","Package":"p","Test":"TestOK","Output":"    ok_test.go:1: chatter\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestOK","Elapsed":2.5}`,
		`{"Action":"output","Package":"p","Test":"TestBad","Output":"    bad_test.go:9: want 1, got 2\n"}`,
		`{"Action":"output","Package":"p","Test":"TestBad/sub","Output":"    sub detail\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestBad/sub","Elapsed":0.1}`,
		`{"Action":"fail","Package":"p","Test":"TestBad","Elapsed":7}`,
		`{"Action":"output","Package":"p","Output":"FAIL\n"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t9.6s\n"}`,
		`{"Action":"fail","Package":"p","Elapsed":9.6}`,
		`{"Action":"output","Package":"q","Output":"PASS\n"}`,
		`{"Action":"output","Package":"q","Output":"ok  \tq\t0.1s\n"}`,
		`{"Action":"pass","Package":"q","Elapsed":0.1}`,
		`{"ImportPath":"r","Action":"build-output","Output":"r/x.go:1:1: syntax error\n"}`,
		`{"Action":"output","Package":"s","Test":"TestHang","Output":"    hang_test.go:3: waiting\n"}`,
		`FAIL	r [build failed]`,
	}, "\n")
	var out strings.Builder
	if err := run(strings.NewReader(in), &out, 1); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"bad_test.go:9: want 1, got 2", "sub detail", "FAIL\tp\t9.6s", "ok  \tq\t0.1s",
		"r/x.go:1:1: syntax error", "FAIL\tr [build failed]",
		"--- unfinished: s TestHang\n    hang_test.go:3: waiting",
		"slowest tests (time run, after any wait for a slot):\n      7s  p TestBad  (failed)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"chatter", "TestOK", "PASS\n"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("output has %q, which a plain go test would not print:\n%s", unwanted, got)
		}
	}
}

// A test that waited for a slot among the package's parallel tests is
// ranked by the time it ran, not by its elapsed time.
func TestSlowestNotCountingTheWaitForASlot(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"output","Package":"p","Test":"TestQueued","Output":"    parallel_test.go:50: gate: waited 4m0.5s for a slot\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestQueued","Elapsed":300.5}`,
		`{"Action":"pass","Package":"p","Test":"TestFirst","Elapsed":90}`,
	}, "\n")
	var out strings.Builder
	if err := run(strings.NewReader(in), &out, 2); err != nil {
		t.Fatal(err)
	}
	want := "   1m30s  p TestFirst\n    1m0s  p TestQueued\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("slowest list:\n%s\nwant:\n%s", out.String(), want)
	}
}
