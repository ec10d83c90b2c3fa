package bot

import (
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
// memory. MADV_PAGEOUT asks the kernel to reclaim those pages, and
// refillPageCache then reads them back into the page cache in single
// pages, unmapped: what is used later is mapped on first touch, without a
// disk read and without its 2 MB folio. It never loses data: pageout is
// reclaim, not discard: a clean page of the file is dropped and read back
// when touched, a page the process has written (its data segment's
// variables) can only go to swap and stays without it, and a page another
// process maps (a shared copy of the binary) stays.
//
// Then the executable's mappings, code and tables alike, are marked
// MADV_RANDOM: without it a fault reads ahead and maps the neighbouring
// pages of the page cache too, and within minutes of idling the garbage
// collector's and the periodic work's reads of type data and pc tables
// bring back ~12 MB of tables that are used a few bytes at a time; with it
// only the touched pages come back (~3 MB). It matters most where the
// host has dropped the refilled page cache again: this machine's DAMON
// reclaim drops unmapped file pages untouched for a minute, and a fault
// with read-ahead then reads its whole read-around window (read_ahead_kb,
// 8 MB here; ~3–5 ms) while every ack of a burst waits behind it. Code
// was left with read-ahead until 2026-12-05; marked random too, the
// first burst after 90 s idle acked with p99 11.9–14.0 ms instead of
// 16–47 ms (bench/ackload -idlefor 90s). A busy process gets read-ahead
// back once its burst's acks are out (readAheadTables).
//
// It returns the file-backed resident size before and after, in KiB.
func releaseStartupPages() (before, after int, err error) {
	if before, err = fileResidentKiB(); err != nil {
		return 0, 0, err
	}
	mapped, err := ownMappings()
	if err != nil {
		return before, 0, err
	}
	for _, m := range mapped {
		if err := madvise(m, unix.MADV_PAGEOUT, "MADV_PAGEOUT"); err != nil {
			return before, 0, err
		}
		if err := madvise(m, unix.MADV_RANDOM, "MADV_RANDOM"); err != nil {
			return before, 0, err
		}
	}
	if err := refillPageCache(mapped); err != nil {
		return before, 0, err
	}
	after, err = fileResidentKiB()
	return before, after, err
}

// refillPageCache reads the executable's mapped ranges back into the page
// cache, without mapping them, in single pages: the file is read with
// POSIX_FADV_RANDOM, so the kernel reads exactly what is asked for into
// small folios, not read-ahead runs into large ones. A later touch is
// then a page-cache hit that maps only that page's neighbourhood (the
// kernel's fault-around, 64 KB), not a disk read nor a 2 MB folio. Without
// it the first burst after a trim read its code and tables from disk page
// by page behind its acks (bench/ackload: ack p99 1.3–3.6× an ack-only
// client's, against 0.6–1.9× with it). It costs one read of the mapped
// part of the executable per trim, in the page cache (reclaimable, never
// the process's resident size); under memory pressure the kernel drops it
// and a touch reads from disk again, as before.
func refillPageCache(mapped []mapping) error {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("refill page cache: %w", err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
		return fmt.Errorf("refill page cache: fadvise: %w", err)
	}
	buf := make([]byte, 256<<10)
	for _, m := range mapped {
		for off, end := int64(m.offset), int64(m.offset)+int64(m.end-m.start); off < end; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), end-off)], off)
			if n == 0 || err != nil {
				break // the end of the file (a mapping may run past it)
			}
			off += int64(n)
		}
	}
	return nil
}

// unmapIdlePages unmaps the executable's read-only pages (code and
// tables, never the data segment, whose written pages would be lost)
// with MADV_DONTNEED, leaving them in the page cache: a touch maps one
// back without a disk read. An idle process refaults only what its
// periodic work uses (Bot.releaseStartupPages calls it every idleUnmap
// while nothing happens); without it the kernel's fault-around (each
// fault maps its 64 KB neighbourhood from the refilled page cache) let
// the resident size creep up to ~20 MB of executable in five minutes.
//
// A mapping with any anonymous page is skipped: besides the data segment,
// a dynamically linked rollbot (cgo: the SQL parser) has a RELRO mapping,
// read-only but written by the dynamic loader before it was protected
// (its relocated GOT); discarding those pages would put the file's
// unrelocated bytes back and crash the next call through them.
func unmapIdlePages() error {
	anon, err := anonymousKiB()
	if err != nil {
		return err
	}
	return adviseExe(func(m mapping) bool {
		a, known := anon[m.start]
		return !m.write && known && a == 0
	}, unix.MADV_DONTNEED, "MADV_DONTNEED")
}

// anonymousKiB is each mapping's Anonymous size in /proc/self/smaps, by
// start address: the pages of a file mapping the process has written
// (copy-on-write).
func anonymousKiB() (map[uintptr]int, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	out := map[uintptr]int{}
	var cur uintptr
	for line := range strings.Lines(string(smaps)) {
		if m, ok := parseMapping(line); ok {
			cur = m.start
			continue
		}
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				return nil, fmt.Errorf("/proc/self/smaps: %q: %w", line, err)
			}
			out[cur] = n
		}
	}
	return out, nil
}

// readAheadTables undoes the MADV_RANDOM of releaseStartupPages: a busy
// process (a burst of commands, an incident) reads its code and tables
// back in whole runs again instead of page by page.
func readAheadTables() error {
	return adviseExe(func(m mapping) bool { return true }, unix.MADV_NORMAL, "MADV_NORMAL")
}

// adviseExe gives advice to the mappings of the executable that which
// selects.
func adviseExe(which func(mapping) bool, advice int, name string) error {
	mapped, err := ownMappings()
	if err != nil {
		return err
	}
	for _, m := range mapped {
		if !which(m) {
			continue
		}
		if err := madvise(m, advice, name); err != nil {
			return err
		}
	}
	return nil
}

// ownMappings are the mappings of rollbot's own executable, from
// /proc/self/maps.
func ownMappings() ([]mapping, error) {
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		return nil, fmt.Errorf("stat /proc/self/exe: %w", err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	var out []mapping
	for line := range strings.Lines(string(maps)) {
		if m, ok := parseMapping(line); ok && m.inode == exe.Ino {
			out = append(out, m)
		}
	}
	return out, nil
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
	exec       bool   // perms has x: code
	write      bool   // perms has w: the data segment
	offset     uint64 // in the file
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
	offset, err4 := strconv.ParseUint(f[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || end <= start {
		return mapping{}, false
	}
	exec := len(f[1]) >= 3 && f[1][2] == 'x'
	write := len(f[1]) >= 2 && f[1][1] == 'w'
	return mapping{start: uintptr(start), end: uintptr(end), exec: exec, write: write, offset: offset, inode: inode}, true
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
