package server

import (
	"encoding/binary"

	eslog "github.com/esdhq/esd/internal/log"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Reads send events encoded straight from the stored records into the
// protobuf wire form of ReadStreamResponse / ReadAllResponse, rather than
// copying each event into a RecordedEvent message and marshaling that:
// the copy, the message and the marshal were most of a read's cost.
// wire_test.go checks the encoding against the generated messages.

// Field numbers of esd.v1 messages, as in the .proto files.
const (
	fieldResponseEvents     protowire.Number = 1 // ReadStreamResponse.events, ReadAllResponse.events, EventBatch.events
	fieldResponseCheckpoint protowire.Number = 2 // ReadAllResponse.checkpoint
	fieldSubscribeEvents    protowire.Number = 1 // SubscribeResponse.events (an EventBatch)

	fieldEventID          protowire.Number = 1
	fieldEventStream      protowire.Number = 2
	fieldEventRevision    protowire.Number = 3
	fieldEventPosition    protowire.Number = 4
	fieldEventType        protowire.Number = 5
	fieldEventData        protowire.Number = 6
	fieldEventMetadata    protowire.Number = 7
	fieldEventContentType protowire.Number = 8
	fieldEventTags        protowire.Number = 9
	fieldEventCreated     protowire.Number = 10

	fieldTimestampSeconds protowire.Number = 1
	fieldTimestampNanos   protowire.Number = 2
)

// encodedMessage is a message already in wire form, head then buf; codec
// sends it as is. gRPC frees buf (back to the pool) once it is written.
type encodedMessage struct {
	head []byte // the tag and length of a wrapped chunk, or nil
	buf  *[]byte
	// pool gets buf back once gRPC has written it; nil means wirePool. A
	// subscriber's pool counts what it holds unwritten (subscribe.go).
	pool mem.BufferPool
}

// bytes is the message as one slice (for tests).
func (m *encodedMessage) bytes() []byte {
	return append(append([]byte(nil), m.head...), *m.buf...)
}

// codec is gRPC's proto codec that also sends encodedMessage and
// receives lenientMessage. With lim set, it checks the append requests it
// receives against lim before decoding them (prescan.go), and counts a
// refusal with lmt.
type codec struct {
	encoding.CodecV2
	lim *Limits
	lmt *limiter
}

func newCodec() codec { return codec{CodecV2: encoding.GetCodecV2("proto")} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*encodedMessage); ok {
		pool := m.pool
		if pool == nil {
			pool = wirePool
		}
		body := mem.NewBuffer(m.buf, pool)
		if m.head == nil {
			return mem.BufferSlice{body}, nil
		}
		return mem.BufferSlice{mem.SliceBuffer(m.head), body}, nil
	}
	return c.CodecV2.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*lenientMessage); ok {
		m.size = data.Len()
		if c.lim != nil {
			if _, ok := appendEventCount(m.msg, nil, 0); ok {
				b, buf := contiguous(data)
				le := prescanAppend(c.lim, m.msg, b)
				if _, stream := m.msg.(*esdv1.AppendStreamRequest); le == nil && c.lmt != nil && !stream {
					// (An AppendStream message is checked when its append runs:
					// a refusal answers that request and the call goes on.)
					le = c.lmt.refuseLarge(int64(len(b)))
				}
				if le != nil {
					if lmt := c.lmt; lmt != nil {
						// Counted when answered: after authentication (limitError.count).
						label := le.limitLabel()
						le.count = func() { lmt.refuse(label) }
					}
					if buf != nil {
						buf.Free()
					}
					m.err = le
					return nil
				}
				if buf != nil { // decode the copy made for the scan, not the pieces again
					defer buf.Free()
					data = mem.BufferSlice{buf}
				}
			}
		}
		m.err = c.CodecV2.Unmarshal(data, m.msg)
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

// lenientMessage receives a message whose decoding error goes to the
// handler rather than to gRPC, which would end the call with INTERNAL at
// once: AppendStream answers what it holds first, then ends the call with
// INVALID_ARGUMENT.
type lenientMessage struct {
	msg  proto.Message
	size int   // the message's encoded size
	err  error // the decoding error, if any
}

// Decoded returns the message and its decoding error, for interceptors
// (Config.StreamInterceptors) that look at what a call received.
func (m *lenientMessage) Decoded() (proto.Message, error) { return m.msg, m.err }

// wireChunk gathers encoded events into one response message of about
// chunkBytes or chunkEvents.
type wireChunk struct {
	// wrap, when not 0, nests the events in a message in this field of the
	// response (SubscribeResponse.events holds an EventBatch).
	wrap   protowire.Number
	buf    *[]byte // from the pool; nil before the first event
	events int
	sent   int // messages sent
	// last is the size of the last message: the next one's buffer starts
	// at about it, so that a live subscriber sent a few events at a time
	// does not hold a buffer of the largest chunk.
	last int
	// maxBytes, when not 0, is the chunk's size instead of chunkBytes,
	// and bufBytes the most its buffer starts with (a subscriber's share
	// of memory may be smaller: chunkFor); pool is its messages'
	// (encodedMessage.pool).
	maxBytes, bufBytes int
	pool               mem.BufferPool
}

// add encodes e as one more event and reports whether the chunk is full.
func (c *wireChunk) add(e *eslog.EventView) bool {
	if c.buf == nil {
		most := chunkBytes + 64<<10
		if c.bufBytes > 0 {
			most = c.bufBytes
		}
		c.buf = wirePool.Get(min(max(2*c.last, 4<<10), most))
		*c.buf = (*c.buf)[:0]
	}
	*c.buf = appendEvent(*c.buf, fieldResponseEvents, e)
	c.events++
	limit := chunkBytes
	if c.maxBytes > 0 {
		limit = c.maxBytes
	}
	return c.events >= chunkEvents || len(*c.buf) >= limit
}

// chunkFor sizes the chunks of a subscriber that may hold share bytes:
// two buffers (one gRPC writes, one being gathered) of a wirePool class
// (a buffer of any size above a class is taken from the next one: a
// message of 300 KiB would hold a 1 MiB buffer), filled to three quarters
// so that the event that fills one most often fits in it.
func (c *wireChunk) chunkFor(share int64) {
	class := 16 << 10
	for _, size := range []int{64 << 10, 256 << 10, chunkBytes + 64<<10} {
		if int64(size) <= share/2 {
			class = size
		}
	}
	c.bufBytes, c.maxBytes = class, min(class*3/4, chunkBytes)
}

// message hands the chunk over as a message, with a checkpoint if not 0,
// and starts a new one.
func (c *wireChunk) message(checkpoint uint64) *encodedMessage {
	if c.buf == nil {
		c.buf = wirePool.Get(16)
		*c.buf = (*c.buf)[:0]
	}
	if checkpoint != 0 {
		*c.buf = protowire.AppendTag(*c.buf, fieldResponseCheckpoint, protowire.VarintType)
		*c.buf = protowire.AppendVarint(*c.buf, checkpoint)
	}
	m := &encodedMessage{buf: c.buf, pool: c.pool}
	if c.wrap != 0 {
		// A separate buffer: the length is known only now, and cutting
		// room for it off the front of buf would shrink buf for the pool.
		m.head = protowire.AppendTag(make([]byte, 0, 1+binary.MaxVarintLen64), c.wrap, protowire.BytesType)
		m.head = protowire.AppendVarint(m.head, uint64(len(*c.buf)))
	}
	c.last = len(*c.buf)
	c.buf, c.events = nil, 0
	c.sent++
	return m
}

// appendEvent appends e as a length-delimited RecordedEvent in field f.
// Zero values are left out, as proto3 marshaling does.
func appendEvent(b []byte, f protowire.Number, e *eslog.EventView) []byte {
	secs, nanos := splitTime(e.Created())
	tsSize := sizeVarintField(fieldTimestampSeconds, uint64(secs)) + sizeVarintField(fieldTimestampNanos, uint64(nanos))
	ct := e.ContentType()
	if len(ct) == 0 {
		ct = []byte(defaultContentType)
	}
	size := sizeBytesField(fieldEventID, 36) +
		sizeBytesField(fieldEventStream, len(e.Stream)) +
		sizeVarintField(fieldEventRevision, e.Revision()) +
		sizeVarintField(fieldEventPosition, e.Position) +
		sizeBytesField(fieldEventType, len(e.Type())) +
		sizeBytesField(fieldEventData, len(e.Data())) +
		sizeBytesField(fieldEventMetadata, len(e.Metadata())) +
		sizeBytesField(fieldEventContentType, len(ct)) +
		protowire.SizeTag(fieldEventCreated) + protowire.SizeBytes(tsSize)
	for _, t := range e.Tags() {
		size += protowire.SizeTag(fieldEventTags) + protowire.SizeBytes(len(t))
	}

	b = protowire.AppendTag(b, f, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, fieldEventID, protowire.BytesType)
	b = protowire.AppendVarint(b, 36)
	b = eslog.AppendID(b, e.ID())
	b = appendBytesField(b, fieldEventStream, e.Stream)
	b = appendVarintField(b, fieldEventRevision, e.Revision())
	b = appendVarintField(b, fieldEventPosition, e.Position)
	b = appendBytesField(b, fieldEventType, e.Type())
	b = appendBytesField(b, fieldEventData, e.Data())
	b = appendBytesField(b, fieldEventMetadata, e.Metadata())
	b = appendBytesField(b, fieldEventContentType, ct)
	for _, t := range e.Tags() {
		b = protowire.AppendTag(b, fieldEventTags, protowire.BytesType)
		b = protowire.AppendBytes(b, t)
	}
	b = protowire.AppendTag(b, fieldEventCreated, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(tsSize))
	b = appendVarintField(b, fieldTimestampSeconds, uint64(secs))
	return appendVarintField(b, fieldTimestampNanos, uint64(nanos))
}

// splitTime splits unix nanoseconds as google.protobuf.Timestamp does
// (nanos always in [0, 1e9)).
func splitTime(ns int64) (secs int64, nanos int32) {
	secs, n := ns/1e9, ns%1e9
	if n < 0 {
		secs, n = secs-1, n+1e9
	}
	return secs, int32(n)
}

func sizeVarintField(f protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(f) + protowire.SizeVarint(v)
}

func sizeBytesField(f protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(f) + protowire.SizeBytes(n)
}

func appendVarintField(b []byte, f protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, f, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytesField[T []byte | string](b []byte, f protowire.Number, v T) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, f, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(v)))
	return append(b, v...)
}
