package bot

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseStartupPages hands back to the kernel the pages of rollbot's own
// executable that start-up touched: package initialisation runs through
// code and tables all over the ~150 MB executable (client-go's scheme, the
// AWS SDK's models, the SQL parsers), and the kernel maps them from its
// page cache in whole large folios, so a process that has only
// initialised is ~65–110 MB resident although ~15 MB of it is its own
// memory. MADV_PAGEOUT asks the kernel to reclaim those pages; what is
// used later is read back on first touch. It never loses data: pageout is
// reclaim, not discard: a clean page of the file is dropped and read back
// when touched, a page the process has written (its data segment's
// variables) can only go to swap and stays without it, and a page another
// process maps (a shared copy of the binary) stays.
//
// Then the executable's tables (read-only data, the pc-value tables, the
// data segment: every mapping that is not code) are marked MADV_RANDOM:
// without it a fault there reads ahead and maps the neighbouring pages of
// the page cache too, and within minutes of idling the garbage collector's
// and the periodic work's reads of type data and pc tables bring back
// ~12 MB of tables that are used a few bytes at a time; with it only the
// touched pages come back (~3 MB). The code keeps its read-ahead: code is
// run in runs of pages, and Linux ignores MADV_RANDOM on executable
// mappings anyway. The cost is a few hundred more page faults in the
// first seconds after the release, each a page-cache hit.
//
// It returns the file-backed resident size before and after, in KiB.
func releaseStartupPages() (before, after int, err error) {
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		return 0, 0, fmt.Errorf("stat /proc/self/exe: %w", err)
	}
	if before, err = fileResidentKiB(); err != nil {
		return 0, 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		m, ok := parseMapping(sc.Text())
		if !ok || m.inode != exe.Ino {
			continue
		}
		if err := madvise(m, unix.MADV_PAGEOUT, "MADV_PAGEOUT"); err != nil {
			return before, 0, err
		}
		if m.exec {
			continue
		}
		if err := madvise(m, unix.MADV_RANDOM, "MADV_RANDOM"); err != nil {
			return before, 0, err
		}
	}
	after, err = fileResidentKiB()
	return before, after, err
}

// readAheadTables undoes the MADV_RANDOM of releaseStartupPages: a busy
// process (a burst of commands, an incident) reads its tables back in
// whole runs again instead of page by page.
func readAheadTables() error {
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		return fmt.Errorf("stat /proc/self/exe: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(maps)) {
		m, ok := parseMapping(line)
		if !ok || m.inode != exe.Ino || m.exec {
			continue
		}
		if err := madvise(m, unix.MADV_NORMAL, "MADV_NORMAL"); err != nil {
			return err
		}
	}
	return nil
}

func madvise(m mapping, advice int, name string) error {
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, uintptr(advice)); errno != 0 {
		return fmt.Errorf("madvise(%s) %#x-%#x: %w", name, m.start, m.end, errno)
	}
	return nil
}

// mapping is one line of /proc/self/maps.
type mapping struct {
	start, end uintptr
	exec       bool // perms has x: code
	inode      uint64
}

// parseMapping reads "start-end perms offset dev inode path".
func parseMapping(line string) (mapping, bool) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return mapping{}, false
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	if !ok {
		return mapping{}, false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	inode, err3 := strconv.ParseUint(f[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || end <= start {
		return mapping{}, false
	}
	exec := len(f[1]) >= 3 && f[1][2] == 'x'
	return mapping{start: uintptr(start), end: uintptr(end), exec: exec, inode: inode}, true
}

// fileResidentKiB is RssFile of /proc/self/status.
func fileResidentKiB() (int, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("/proc/self/status: no RssFile")
}
