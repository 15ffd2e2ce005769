package server

import (
	"fmt"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// gRPC decodes a request before any handler or interceptor runs, and a
// decoded event costs about decodedEventBytes besides its payload: an
// Append of 3,000,000 empty events is a 15 MB message that decoded to
// over 4 GB. The codec therefore scans the wire bytes of the append
// requests first (prescanAppend), counting their events without decoding
// them, and refuses one over the limits instead of decoding it.

// Field numbers of the append requests, as in stream_service.proto.
const (
	fieldAppendEvents       protowire.Number = 6 // AppendRequest.events
	fieldMultiAppends       protowire.Number = 1 // AppendMultiRequest.appends
	fieldAppendStreamAppend protowire.Number = 2 // AppendStreamRequest.append
)

// countEvents counts the events of an encoded AppendRequest: the
// occurrences of field 6 with the bytes wire type, as proto.Unmarshal
// counts them (a field of another wire type is an unknown field to it).
// It stops at stop or more, and at the first malformed field, returning
// the count so far: the decoder then refuses the rest.
func countEvents(b []byte, stop int) int {
	n := 0
	for len(b) > 0 && n < stop {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return n
		}
		b = b[l:]
		if num == fieldAppendEvents && typ == protowire.BytesType {
			n++
		}
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return n
		}
		b = b[l:]
	}
	return n
}

// countNested counts the events of the AppendRequests in field f of an
// encoded message (AppendMultiRequest.appends, AppendStreamRequest.append:
// repeated occurrences of a singular message field merge, their events
// appended, so they are summed too).
func countNested(b []byte, f protowire.Number, stop int) int {
	n := 0
	for len(b) > 0 && n < stop {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return n
		}
		b = b[l:]
		if num == f && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return n
			}
			n += countEvents(v, stop-n)
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return n
		}
		b = b[l:]
	}
	return n
}

// appendEventCount counts the events of an encoded append request m (an
// AppendRequest, AppendMultiRequest or AppendStreamRequest), up to stop;
// ok is false for any other message.
func appendEventCount(m any, b []byte, stop int) (n int, ok bool) {
	switch m.(type) {
	case *esdv1.AppendRequest:
		return countEvents(b, stop), true
	case *esdv1.AppendMultiRequest:
		return countNested(b, fieldMultiAppends, stop), true
	case *esdv1.AppendStreamRequest:
		return countNested(b, fieldAppendStreamAppend, stop), true
	}
	return 0, false
}

// prescanAppend checks an encoded append request against the limits
// before it is decoded: its events (TOO_MANY_EVENTS) and its estimated
// decoded size (REQUEST_TOO_LARGE). nil: decode it.
func prescanAppend(lim *Limits, m any, b []byte) *limitError {
	// Counting stops once the decoded size would pass its limit too.
	stop := lim.MaxAppendEvents + 1
	if room := (lim.MaxRequestDecodedBytes - len(b)) / decodedEventBytes; room+1 < stop {
		stop = max(room+1, 0)
	}
	n, ok := appendEventCount(m, b, stop)
	if !ok {
		return nil
	}
	if n > lim.MaxAppendEvents {
		return &limitError{reason: reasonTooManyEvents, limit: "max-append-events", value: int64(lim.MaxAppendEvents),
			msg: fmt.Sprintf("more than %d events in one request: split it (the request was not decoded)", lim.MaxAppendEvents)}
	}
	if est := len(b) + n*decodedEventBytes; est > lim.MaxRequestDecodedBytes {
		return &limitError{reason: reasonRequestTooLarge, limit: "max-request-decoded-bytes", value: int64(lim.MaxRequestDecodedBytes),
			msg: fmt.Sprintf("request of %d bytes and %d or more events would decode to %d bytes or more, at most %d: split it (the request was not decoded)",
				len(b), n, est, lim.MaxRequestDecodedBytes)}
	}
	return nil
}

// contiguous returns data as one slice, and the buffer to free after use
// (nil when data was one buffer already).
func contiguous(data mem.BufferSlice) ([]byte, mem.Buffer) {
	if len(data) == 1 {
		return data[0].ReadOnlyData(), nil
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	return buf.ReadOnlyData(), buf
}
