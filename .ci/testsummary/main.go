// Command testsummary reads `go test -json` on stdin and prints what a
// plain `go test` run prints (each package's ok/FAIL line, the whole output
// of every failed test, build errors), then the slowest tests, so that a CI
// log shows where the time goes without the noise of -v.
//
//	go test -json ./... | go run ./.ci/testsummary -slowest 25
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// event is one line of test2json's output (go doc test2json).
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string
	FailedBuild string
}

type key struct{ pkg, test string }

type result struct {
	key
	elapsed time.Duration
	passed  bool
}

func main() {
	slowest := flag.Int("slowest", 25, "how many of the slowest tests to list")
	flag.Parse()
	if err := run(os.Stdin, os.Stdout, *slowest); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, slowest int) error {
	output := map[key][]string{} // what each test (or package, test "") printed
	var tests []result
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			fmt.Fprintln(out, string(line)) // not JSON: go test's own messages
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "output":
			output[k] = append(output[k], e.Output)
		case "pass", "fail", "skip":
			if e.Test != "" {
				if e.Action == "fail" {
					fmt.Fprint(out, strings.Join(output[k], ""))
				}
				if !strings.Contains(e.Test, "/") {
					tests = append(tests, result{k, seconds(e.Elapsed) - waited(output[k]), e.Action != "fail"})
				}
				delete(output, k)
				continue
			}
			// The package's end: its own output holds the ok/FAIL line
			// and, on failure, what no test claimed (a panic, a timeout).
			lines := output[k]
			if e.Action != "fail" {
				lines = slices.DeleteFunc(lines, func(s string) bool {
					return s == "PASS\n" || strings.HasPrefix(s, "=== ") || strings.HasPrefix(s, "--- ")
				})
			}
			fmt.Fprint(out, strings.Join(lines, ""))
			delete(output, k)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for k, lines := range output { // a test still running when the binary died
		if k.test != "" {
			fmt.Fprintf(out, "--- unfinished: %s %s\n%s", k.pkg, k.test, strings.Join(lines, ""))
		}
	}
	slices.SortFunc(tests, func(a, b result) int { return cmp.Compare(b.elapsed, a.elapsed) })
	if len(tests) > slowest {
		tests = tests[:slowest]
	}
	if len(tests) > 0 {
		fmt.Fprintf(out, "\nslowest tests (time run, after any wait for a slot):\n")
		for _, t := range tests {
			mark := ""
			if !t.passed {
				mark = "  (failed)"
			}
			fmt.Fprintf(out, "%8s  %s %s%s\n", t.elapsed.Round(100*time.Millisecond), t.pkg, t.test, mark)
		}
	}
	return nil
}

// gateLine is what a test that waits for a slot among the package's
// parallel tests logs once it has one (bot/parallel_test.go).
var gateLine = regexp.MustCompile(`gate: waited (\S+) for a slot`)

// waited is how long a test waited for its slot before it ran, so that
// the slowest list ranks tests by their own time.
func waited(lines []string) time.Duration {
	for _, l := range lines {
		if m := gateLine.FindStringSubmatch(l); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				return d
			}
		}
	}
	return 0
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
