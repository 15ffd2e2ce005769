package snapshot

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// loadRates estimates each stream's load rate (Load calls per second, an
// exponentially decaying average) in fixed memory: a count-min sketch of
// decayed load counts.
//
// Decay. A stream's decayed count at time t is the sum over its loads at
// times t_i <= t of exp(-(t - t_i)/tau), tau = halfLife/ln 2: a load
// counts 1 when it happens and half as much a half-life later. Its rate is
// count/tau: for loads at a steady rate r, the count tends to r*tau, so
// the estimate tends to r, and a stream no longer loaded decays to 0.
// The sketch uses forward decay: a load adds exp((t_i - L)/tau) to its
// cells, for a landmark time L, and a query multiplies by exp(-(t - L)/tau);
// every cell then decays alike without being touched. When (t - L)/tau
// grows past renormAfter, a new sketch is made with the landmark moved
// to now and every cell scaled down to match (loads added to the old
// sketch while it is copied are lost: a few at most).
//
// Bound. depth rows of width cells (16384 x 4 by default: 512 KiB,
// whatever the number of streams). A load adds to one cell per row,
// chosen by a hash of the stream's name; the estimate is the smallest of
// the stream's cells. So it is never below the true decayed count, and
// above it by at most e/width times the decayed count of all streams'
// loads together, with probability at least 1 - exp(-depth) (98% for 4
// rows): with 16384 cells a row, a stream's rate reads at most the total
// load rate / 6027 too high. Streams that share no cell with a loaded
// stream read exactly.
//
// The sketch is stored in the namespace when the engine drains and read
// back when it opens, so rates survive a restart (decayed by the time the
// server was down: they are functions of wall-clock time); a crash loses
// them, and they build up again within a few half-lives.
type loadRates struct {
	tau      float64 // seconds
	halfLife time.Duration
	width    int // a power of two
	cur      atomic.Pointer[sketch]
	mu       sync.Mutex // one renormalization at a time
}

const (
	sketchDepth  = 4
	renormAfter  = 40.0 // e^40 ~ 2.4e17: far from float64's range even summed over many loads
	ratesVersion = 1
)

type sketch struct {
	landmark int64 // unix nanoseconds
	cells    []atomic.Uint64
}

func newLoadRates(halfLife time.Duration, width int, now time.Time) *loadRates {
	if width&(width-1) != 0 {
		panic(fmt.Sprintf("snapshot: sketch width %d is not a power of two", width))
	}
	r := &loadRates{tau: halfLife.Seconds() / math.Ln2, halfLife: halfLife, width: width}
	r.cur.Store(&sketch{landmark: now.UnixNano(), cells: make([]atomic.Uint64, sketchDepth*width)})
	return r
}

// cells returns the stream's cell in each row.
func (r *loadRates) index(name string, out *[sketchDepth]int) {
	h := hashName(name)
	h1, h2 := uint32(h), uint32(h>>32)|1
	for i := range sketchDepth {
		out[i] = i*r.width + int((h1+uint32(i)*h2)&uint32(r.width-1))
	}
}

// age is (t - landmark)/tau.
func (r *loadRates) age(sk *sketch, now time.Time) float64 {
	return float64(now.UnixNano()-sk.landmark) / 1e9 / r.tau
}

// add counts one load of name at now.
func (r *loadRates) add(name string, now time.Time) {
	sk := r.cur.Load()
	x := r.age(sk, now)
	if x > renormAfter {
		sk = r.renormalize(now)
		x = r.age(sk, now)
	}
	w := math.Exp(x)
	var idx [sketchDepth]int
	r.index(name, &idx)
	for _, i := range idx {
		c := &sk.cells[i]
		for {
			old := c.Load()
			if c.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+w)) {
				break
			}
		}
	}
}

// count is name's estimated decayed load count at now.
func (r *loadRates) count(name string, now time.Time) float64 {
	sk := r.cur.Load()
	var idx [sketchDepth]int
	r.index(name, &idx)
	m := math.Inf(1)
	for _, i := range idx {
		m = min(m, math.Float64frombits(sk.cells[i].Load()))
	}
	return m * math.Exp(-r.age(sk, now))
}

// rate is name's estimated load rate at now, in loads per second.
func (r *loadRates) rate(name string, now time.Time) float64 {
	return r.count(name, now) / r.tau
}

// renormalize moves the landmark to now, unless another call just did.
func (r *loadRates) renormalize(now time.Time) *sketch {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cur.Load()
	x := r.age(old, now)
	if x <= renormAfter {
		return old
	}
	f := math.Exp(-x)
	ns := &sketch{landmark: now.UnixNano(), cells: make([]atomic.Uint64, len(old.cells))}
	for i := range old.cells {
		ns.cells[i].Store(math.Float64bits(math.Float64frombits(old.cells[i].Load()) * f))
	}
	r.cur.Store(ns)
	return ns
}

// encode: version(1) half-life ns(8) landmark(8) width(4), then the
// cells (float64 bits, 8 each), row by row.
func (r *loadRates) encode() []byte {
	sk := r.cur.Load()
	b := make([]byte, 0, 21+8*len(sk.cells))
	b = append(b, ratesVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(r.halfLife))
	b = binary.BigEndian.AppendUint64(b, uint64(sk.landmark))
	b = binary.BigEndian.AppendUint32(b, uint32(r.width))
	for i := range sk.cells {
		b = binary.BigEndian.AppendUint64(b, sk.cells[i].Load())
	}
	return b
}

// restore takes the cells of a stored sketch of the same shape and half
// life; it reports whether it could.
func (r *loadRates) restore(v []byte) (bool, error) {
	if len(v) < 21 || v[0] != ratesVersion {
		return false, fmt.Errorf("%w: load rates of %d bytes", errCorrupt, len(v))
	}
	hl, landmark, width := time.Duration(binary.BigEndian.Uint64(v[1:])), int64(binary.BigEndian.Uint64(v[9:])), int(binary.BigEndian.Uint32(v[17:]))
	if hl != r.halfLife || width != r.width {
		return false, nil // another configuration: start afresh
	}
	cells := v[21:]
	if len(cells) != 8*sketchDepth*width {
		return false, fmt.Errorf("%w: load rates of %d bytes for width %d", errCorrupt, len(v), width)
	}
	sk := &sketch{landmark: landmark, cells: make([]atomic.Uint64, sketchDepth*width)}
	for i := range sk.cells {
		f := math.Float64frombits(binary.BigEndian.Uint64(cells[8*i:]))
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return false, fmt.Errorf("%w: load rate cell %d", errCorrupt, i)
		}
		sk.cells[i].Store(math.Float64bits(f))
	}
	r.cur.Store(sk)
	return true, nil
}

// hashName is FNV-1a of the name, finished by splitmix64's mixer: stable
// across processes (the sketch is stored), unlike maphash.
func hashName(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}
