package server

import (
	"sync/atomic"

	"google.golang.org/grpc/mem"
)

// wirePool recycles the buffers of pre-encoded messages (wireChunk): a
// buffer comes back to it when gRPC has written the message out.
//
// gRPC's default pool does not suit them: it clears every buffer it hands
// out, and those above its largest class (1 MiB) go to a fallback
// sync.Pool. Nor does a sync.Pool: the buffer is put back by gRPC's writer
// goroutine, into its P's private slot, where the sender's Get on another
// P does not look; a catch-up subscriber allocated a new 1 MiB buffer for
// one message in four, and the heap held tens of MiB of them.
var wirePool = newClassPool([]*poolClass{
	{size: 4 << 10, keep: 128},
	{size: 16 << 10, keep: 64},
	{size: 64 << 10, keep: 32},
	{size: 256 << 10, keep: 16},
	{size: chunkBytes + 64<<10, keep: 8},
})

// classPool is a mem.BufferPool of a few size classes, each a bounded free
// list: it keeps at most keep buffers of a class, each at most half as
// large again as the class (a chunk that grew past it by append, which
// adds a quarter and rounds up); about 25 MiB in all for wirePool,
// whatever the traffic was. A buffer
// must come back whole (as mem.BufferPool asks): one cut at the front
// would have less capacity each time round, and fall to a smaller class.
type classPool struct {
	classes []*poolClass
}

type poolClass struct {
	size int
	keep int
	free chan *[]byte
	made atomic.Int64 // buffers allocated (the free list was empty)
}

func newClassPool(classes []*poolClass) *classPool {
	for _, c := range classes {
		c.free = make(chan *[]byte, c.keep)
	}
	return &classPool{classes: classes}
}

// Get returns a buffer of length n, from the smallest class that holds n
// (a new, unpooled one when none does).
func (p *classPool) Get(n int) *[]byte {
	for _, c := range p.classes {
		if n <= c.size {
			select {
			case b := <-c.free:
				*b = (*b)[:n]
				return b
			default:
				c.made.Add(1)
				b := make([]byte, n, c.size)
				return &b
			}
		}
	}
	b := make([]byte, n)
	return &b
}

// Put keeps b in the largest class its capacity covers, unless it is more
// than half as large again or that class keeps enough already; the rest
// are left to the garbage collector.
func (p *classPool) Put(b *[]byte) {
	for i := len(p.classes) - 1; i >= 0; i-- {
		if c := p.classes[i]; cap(*b) >= c.size {
			if cap(*b) > c.size+c.size/2 {
				return
			}
			*b = (*b)[:0]
			select {
			case c.free <- b:
			default:
			}
			return
		}
	}
}

var _ mem.BufferPool = (*classPool)(nil)
