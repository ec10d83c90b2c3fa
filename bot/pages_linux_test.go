package bot

import (
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"rollbot/platforms/compat"
)

// The test binary, like rollbot, has run every package's initialisation:
// releasing its start-up pages must unmap most of its executable's
// resident pages, and the code must go on running from the pages read
// back.
func TestReleaseStartupPages(t *testing.T) {
	for i := range pagesCanary {
		pagesCanary[i] = byte(i % 251)
	}
	// go test has just written the test binary: its pages are dirty in
	// the page cache, in large folios, and cannot be reclaimed until they
	// are written back (a deployed rollbot's are long clean).
	unix.Sync()
	before, after, err := releaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("file-backed resident: %d KiB before, %d KiB after", before, after)
	if after >= before/2 {
		t.Errorf("file-backed resident %d KiB after releasing, %d KiB before: expected less than half", after, before)
	}
	// The mapped part of the executable is back in the page cache,
	// though not mapped: a later touch is a page-cache hit.
	if cached := exeCachedFraction(t); cached < 0.95 {
		t.Errorf("%.0f%% of the executable's mapped pages are in the page cache after the release; want them read back", 100*cached)
	}
	// Code, tables and variables paged out are read back on use: a
	// config parses, and a variable of the data segment written before
	// the release keeps its value.
	cfg, err := ParseConfig([]byte("incident_channels: [C1]\nservices:\n  a:\n    platform: simulated\n"))
	if err != nil || len(cfg.Services) != 1 {
		t.Fatalf("after releasing pages: %v, %+v", err, cfg)
	}
	for i, b := range pagesCanary {
		if b != byte(i%251) {
			t.Fatalf("data segment byte %d is %d after releasing pages, was written %d", i, b, i%251)
		}
	}
	// Unmapping the pages again (an idle process, every idleUnmap)
	// lowers the executable's resident size, keeps the page cache and
	// the data segment (and, in a dynamically linked binary, the RELRO
	// mapping the loader wrote), and the code runs on: Go, and C through
	// cgo (the PostgreSQL parser).
	// The garbage collector reads type data all over the tables: off
	// while measuring, or a cycle maps much of them back at once.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	mapped := exeResidentKiB(t)
	if err := unmapIdlePages(); err != nil {
		t.Fatal(err)
	}
	unmapped := exeResidentKiB(t)
	t.Logf("the executable's read-only mappings resident: %d KiB before unmapIdlePages, %d KiB after", mapped, unmapped)
	if unmapped >= mapped/2 {
		t.Errorf("the executable's read-only mappings hold %d KiB after unmapIdlePages, %d KiB before: expected less than half", unmapped, mapped)
	}
	if _, err := compat.Classify(compat.Postgres, "ALTER TABLE orders ADD COLUMN note text;"); err != nil {
		t.Fatalf("cgo call after unmapIdlePages: %v", err)
	}
	if cached := exeCachedFraction(t); cached < 0.95 {
		t.Errorf("%.0f%% of the executable's mapped pages in the page cache after unmapIdlePages; want them kept", 100*cached)
	}
	if cfg, err := ParseConfig([]byte("incident_channels: [C1]\nservices:\n  b:\n    platform: simulated\n")); err != nil || len(cfg.Services) != 1 {
		t.Fatalf("after unmapIdlePages: %v, %+v", err, cfg)
	}
	for i, b := range pagesCanary {
		if b != byte(i%251) {
			t.Fatalf("data segment byte %d is %d after unmapIdlePages, was written %d", i, b, i%251)
		}
	}
	// The executable's code and tables read only the touched pages back
	// from now on (VmFlags "rr", random read).
	tables, code := 0, 0
	for _, m := range exeMappings(t) {
		if m.exec {
			code++
		} else {
			tables++
		}
		if !m.randomRead {
			t.Errorf("mapping %s of the executable is not marked random read after the release", m.line)
		}
	}
	if tables == 0 || code == 0 {
		t.Errorf("%d table and %d code mappings of the executable in /proc/self/smaps; expected both", tables, code)
	}
	// Busy again: code and tables read ahead as before.
	if err := readAheadTables(); err != nil {
		t.Fatal(err)
	}
	for _, m := range exeMappings(t) {
		if m.randomRead {
			t.Errorf("mapping %s is still marked random read after readAheadTables", m.line)
		}
	}
}

// exeResidentKiB sums Rss over the executable's read-only mappings
// without anonymous (written) pages: what unmapIdlePages unmaps.
func exeResidentKiB(t *testing.T) int {
	t.Helper()
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		t.Fatal(err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	var in bool
	var rss int
	flush := func(anon int) {
		if in && anon == 0 {
			total += rss
		}
	}
	for line := range strings.Lines(string(smaps)) {
		if m, ok := parseMapping(line); ok {
			in = m.inode == exe.Ino && !m.write
			rss = 0
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Rss:":
			rss = n
		case "Anonymous:":
			flush(n)
		}
	}
	return total
}

// exeCachedFraction is the share of the executable's mapped pages that
// are in the page cache (mincore), mapped by this process or not.
func exeCachedFraction(t *testing.T) float64 {
	t.Helper()
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	page := uintptr(os.Getpagesize())
	total, in := 0, 0
	for line := range strings.Lines(string(maps)) {
		m, ok := parseMapping(line)
		if !ok || m.inode != exe.Ino {
			continue
		}
		vec := make([]byte, (m.end-m.start+page-1)/page)
		if _, _, errno := unix.Syscall(unix.SYS_MINCORE, m.start, m.end-m.start, uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
			t.Fatalf("mincore %#x-%#x: %v", m.start, m.end, errno)
		}
		for _, v := range vec {
			in += int(v & 1)
		}
		total += len(vec)
	}
	if total == 0 {
		t.Fatal("no mapping of the executable in /proc/self/maps")
	}
	return float64(in) / float64(total)
}

type smapsEntry struct {
	line       string
	exec       bool
	randomRead bool
}

// exeMappings reads the test binary's own mappings from /proc/self/smaps.
func exeMappings(t *testing.T) []smapsEntry {
	t.Helper()
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		t.Fatal(err)
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var out []smapsEntry
	var cur *smapsEntry
	for line := range strings.Lines(string(smaps)) {
		line = strings.TrimSpace(line)
		if m, ok := parseMapping(line); ok {
			cur = nil
			if m.inode == exe.Ino {
				out = append(out, smapsEntry{line: line, exec: m.exec})
				cur = &out[len(out)-1]
			}
			continue
		}
		if flags, ok := strings.CutPrefix(line, "VmFlags:"); ok && cur != nil {
			cur.randomRead = slices.Contains(strings.Fields(flags), "rr")
		}
	}
	return out
}

// pagesCanary is in the executable's data segment (initialised, so not
// bss) and spans several pages.
var pagesCanary = [3 * 4096]byte{1: 1}

func TestParseMapping(t *testing.T) {
	light(t)
	for _, c := range []struct {
		line string
		want mapping
		ok   bool
	}{
		{"00400000-00402000 r--p 00000000 fd:01 1234 /usr/bin/rollbot", mapping{start: 0x400000, end: 0x402000, inode: 1234}, true},
		{"0621a000-06b90000 rw-p 05e1a000 fd:01 1234 /usr/bin/rollbot", mapping{start: 0x621a000, end: 0x6b90000, write: true, offset: 0x5e1a000, inode: 1234}, true},
		{"7ffd1000-7ffd3000 r-xp 00000000 00:00 0 [vdso]", mapping{start: 0x7ffd1000, end: 0x7ffd3000, exec: true}, true},
		{"garbage", mapping{}, false},
		{"2000-1000 r--p 0 00:00 0", mapping{}, false},
	} {
		got, ok := parseMapping(c.line)
		if ok != c.ok || got != c.want {
			t.Errorf("parseMapping(%q) = %+v, %v; want %+v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}
