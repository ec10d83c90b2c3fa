package scrape

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"slices"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// A sample is one background scrape reduced to what an assessment needs:
// the increase of the request counters (all, and 5xx) and of the latency
// histogram since the scrape before it, summed over the matching series.
// Counter resets are handled per series when the sample is made (a series
// that went down counts from zero), so a window's numbers are the sums of
// its samples' increases, whatever restarted in between.
type sample struct {
	at   int64 // unix ms of the scrape
	prev int64 // unix ms of the scrape it is compared with; 0: none, the sample measures nothing
	// reqType and histType are 0 when the metric is usable (or absent),
	// else 1 + the dto.MetricType of a metric of the wrong kind.
	reqType, histType uint8
	total, failed     float64
	// count and buckets are the histogram's increase: buckets[i] is the
	// increase of the cumulative count at bounds[i] of layout; the last
	// bound is +Inf. No buckets: no histogram series.
	count   float64
	layout  uint32
	buckets []float64
}

// The encoding of a sample, version 1 (about 30 bytes for the usual
// instrumentation at a few requests per second):
//
//	byte    version (1)
//	uvarint at (unix ms)
//	byte    flags: 1 has prev, 2 reqType follows, 4 histType follows, 8 histogram follows
//	uvarint at - prev                       if flags&1
//	byte    reqType                         if flags&2
//	byte    histType                        if flags&4
//	num     total, failed
//	uvarint layout, num count, uvarint n, n × num (the increase of each bucket,
//	        not cumulative, so mostly zeros)  if flags&8
//
// A num is a uvarint 2v for a whole number v in [0, 2^52), else the
// uvarint 1 and the float64's 8 bytes, little endian.
const sampleVersion = 1

const (
	flagPrev = 1 << iota
	flagReqType
	flagHistType
	flagHist
)

func appendNum(b []byte, v float64) []byte {
	if v >= 0 && v < 1<<52 && v == math.Trunc(v) {
		return binary.AppendUvarint(b, uint64(v)<<1)
	}
	b = append(b, 1)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

func (s *sample) encode(b []byte) []byte {
	b = append(b, sampleVersion)
	b = binary.AppendUvarint(b, uint64(s.at))
	var flags byte
	if s.prev != 0 {
		flags |= flagPrev
	}
	if s.reqType != 0 {
		flags |= flagReqType
	}
	if s.histType != 0 {
		flags |= flagHistType
	}
	if len(s.buckets) > 0 {
		flags |= flagHist
	}
	b = append(b, flags)
	if s.prev != 0 {
		b = binary.AppendUvarint(b, uint64(max(s.at-s.prev, 0)))
	}
	if s.reqType != 0 {
		b = append(b, s.reqType)
	}
	if s.histType != 0 {
		b = append(b, s.histType)
	}
	b = appendNum(b, s.total)
	b = appendNum(b, s.failed)
	if len(s.buckets) > 0 {
		b = binary.AppendUvarint(b, uint64(s.layout))
		b = appendNum(b, s.count)
		b = binary.AppendUvarint(b, uint64(len(s.buckets)))
		var below float64
		for _, c := range s.buckets {
			b = appendNum(b, c-below)
			below = c
		}
	}
	return b
}

var errSample = errors.New("malformed scrape sample")

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errSample
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errSample
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) num() float64 {
	x := r.uvarint()
	if x&1 == 0 {
		return float64(x >> 1)
	}
	if r.err != nil || len(r.b) < 8 {
		r.err = errSample
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

// sampleAt reads only the time of an encoded sample.
func sampleAt(b []byte) int64 {
	if len(b) < 2 || b[0] != sampleVersion {
		return 0
	}
	v, n := binary.Uvarint(b[1:])
	if n <= 0 {
		return 0
	}
	return int64(v)
}

// decodeSample decodes b into s, reusing s.buckets.
func decodeSample(b []byte, s *sample) error {
	r := reader{b: b}
	if r.byte() != sampleVersion {
		return errSample
	}
	buckets := s.buckets[:0]
	*s = sample{at: int64(r.uvarint())}
	flags := r.byte()
	if flags&flagPrev != 0 {
		s.prev = s.at - int64(r.uvarint())
		if s.prev <= 0 {
			s.prev = 1
		}
	}
	if flags&flagReqType != 0 {
		s.reqType = r.byte()
	}
	if flags&flagHistType != 0 {
		s.histType = r.byte()
	}
	s.total, s.failed = r.num(), r.num()
	if flags&flagHist != 0 {
		s.layout = uint32(r.uvarint())
		s.count = r.num()
		n := r.uvarint()
		if n > 1024 {
			return errSample
		}
		var below float64
		for range n {
			below += r.num()
			buckets = append(buckets, below)
		}
	}
	s.buckets = buckets
	return r.err
}

// layoutOf is the id of a set of bucket bounds (sorted, +Inf last).
func layoutOf(bounds []float64) uint32 {
	h := fnv.New32a()
	var b [8]byte
	for _, v := range bounds {
		binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
		h.Write(b[:])
	}
	return h.Sum32()
}

func encodeLayout(bounds []float64) []byte {
	b := make([]byte, 0, 8*len(bounds))
	for _, v := range bounds {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	return b
}

func decodeLayout(b []byte) ([]float64, bool) {
	if len(b)%8 != 0 || len(b) == 0 {
		return nil, false
	}
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, true
}

// makeSample reduces the scrape cur to its increase since prev (nil: the
// first scrape, which measures nothing). It returns the bucket bounds of
// the sample's layout.
func makeSample(prev, cur *snapshot) (sample, []float64) {
	s := sample{at: cur.at.UnixMilli()}
	if prev != nil {
		s.prev = max(prev.at.UnixMilli(), 1)
	}
	s.reqType, s.histType = cur.reqType, cur.histType
	if prev == nil {
		return s, nil
	}
	for key, c := range cur.requests {
		d := c.value
		if b, ok := prev.requests[key]; ok && c.value >= b.value {
			d = c.value - b.value
		}
		s.total += d
		if c.failed {
			s.failed += d
		}
	}
	if len(cur.hists) == 0 {
		return s, nil
	}
	inc := map[float64]float64{}
	for key, h := range cur.hists {
		b, ok := prev.hists[key]
		reset := !ok || h.count < b.count
		for le, v := range h.buckets {
			if !reset {
				v -= b.buckets[le]
			}
			inc[le] += v
		}
		if reset {
			s.count += h.count
		} else {
			s.count += h.count - b.count
		}
	}
	bounds := make([]float64, 0, len(inc))
	for le := range inc {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	s.buckets = make([]float64, len(bounds))
	for i, le := range bounds {
		s.buckets[i] = inc[le]
	}
	s.layout = layoutOf(bounds)
	return s, bounds
}

// wrongType is the name of a metric type stored as 1 + dto.MetricType.
func wrongType(t uint8) string {
	name, ok := dto.MetricType_name[int32(t)-1]
	if !ok {
		return "metric of another type"
	}
	return toLower(name)
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// ring is a service's scrape history: encoded samples back to back in one
// buffer, oldest first, at most keep long and max many. Old samples are
// dropped from the front; the live ones are moved to the front rather than
// the buffer grown, and once the dropped ones make up a sixteenth of it,
// into a smaller buffer when appends had grown it well past them. So a
// service costs about the encoded size of its samples plus 4 bytes each,
// and the slack of the buffers' growth while the first hour fills them,
// also after days of scraping (compacting only once half of the buffer was
// dropped samples kept twice the history: 148 KB instead of 66 KB per
// service at 3 requests a second). A compaction copies the live samples,
// about once per sixteenth of the history: negligible.
type ring struct {
	mu      sync.Mutex
	buf     []byte
	offs    []uint32 // start of each sample in buf; offs[head:] are live
	head    int
	keep    time.Duration
	max     int
	layouts map[uint32][]float64
}

func newRing(keep time.Duration, max int) *ring {
	return &ring{keep: keep, max: max, layouts: map[uint32][]float64{}}
}

func (r *ring) bytesOf(i int) []byte {
	end := len(r.buf)
	if i+1 < len(r.offs) {
		end = int(r.offs[i+1])
	}
	return r.buf[r.offs[i]:end]
}

// add appends an encoded sample and drops what fell out of the horizon.
func (r *ring) add(enc []byte, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.head > 0 && (len(r.buf)+len(enc) > cap(r.buf) || len(r.offs) == cap(r.offs)) {
		r.compact() // rather than grow the buffers past what was dropped
	}
	r.offs = append(r.offs, uint32(len(r.buf)))
	r.buf = append(r.buf, enc...)
	r.trim(now)
}

func (r *ring) trim(now time.Time) {
	oldest := now.Add(-r.keep).UnixMilli()
	for r.head < len(r.offs) && (len(r.offs)-r.head > r.max || sampleAt(r.bytesOf(r.head)) < oldest) {
		r.head++
	}
	if r.head == len(r.offs) {
		r.buf, r.offs, r.head = r.buf[:0], r.offs[:0], 0
		return
	}
	if r.head > 0 && int(r.offs[r.head]) > len(r.buf)/16 {
		r.compact()
	}
}

// compact moves the live samples to the front: into a buffer with an
// eighth of headroom when the one they are in is much larger (appends
// grew it), in place otherwise.
func (r *ring) compact() {
	cut := r.offs[r.head]
	live, offs := r.buf[cut:], r.offs[r.head:]
	if n := len(live); cap(r.buf) > n+n/4+512 {
		r.buf = make([]byte, 0, n+n/8+64)
	}
	r.buf = append(r.buf[:0], live...) // copy handles the overlap
	if k := len(offs); cap(r.offs) > k+k/4+128 {
		r.offs = make([]uint32, 0, k+k/8+16)
	}
	r.offs = append(r.offs[:0], offs...)
	for i := range r.offs {
		r.offs[i] -= cut
	}
	r.head = 0
}

// reset replaces the history (a takeover loads it from Redis).
func (r *ring) reset(samples [][]byte, layouts map[uint32][]float64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf, r.offs, r.head = nil, nil, 0
	slices.SortStableFunc(samples, bySampleTime)
	for _, s := range samples {
		if sampleAt(s) == 0 {
			continue
		}
		r.offs = append(r.offs, uint32(len(r.buf)))
		r.buf = append(r.buf, s...)
	}
	r.layouts = layouts
	if r.layouts == nil {
		r.layouts = map[uint32][]float64{}
	}
	r.trim(now)
}

func (r *ring) addLayout(id uint32, bounds []float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.layouts[id]; !ok {
		r.layouts[id] = bounds
	}
}

// len is the number of samples kept.
func (r *ring) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.offs) - r.head
}

// copyOut copies what a window needs: the samples and layouts.
func (r *ring) copyOut() (history, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := history{layouts: make(map[uint32][]float64, len(r.layouts))}
	for k, v := range r.layouts {
		h.layouts[k] = v
	}
	for i := r.head; i < len(r.offs); i++ {
		h.samples = append(h.samples, r.bytesOf(i))
	}
	// The bytes are copied once, so the ring can change meanwhile.
	total := 0
	for _, s := range h.samples {
		total += len(s)
	}
	buf := make([]byte, 0, total)
	for i, s := range h.samples {
		buf = append(buf, s...)
		h.samples[i] = buf[len(buf)-len(s):]
	}
	return h, nil
}

// history is a service's samples, oldest first, with their layouts.
type history struct {
	samples [][]byte
	layouts map[uint32][]float64
}
