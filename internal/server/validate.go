package server

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"golang.org/x/text/unicode/norm"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limits of docs/api.md.
const (
	maxStreamNameBytes  = 512
	maxTypeBytes        = 256
	maxContentTypeBytes = 256
	maxMetadataBytes    = 64 << 10
	maxTags             = 32
	maxTagBytes         = 128
	maxMultiEntries     = 128
	maxFilterPrefixes   = 32
	maxPageSize         = 1000
	defaultPageSize     = 100
)

// Limits are the configurable request limits.
type Limits struct {
	// MaxEventBytes bounds an event's data (EVENT_TOO_LARGE).
	MaxEventBytes int
	// MaxAppendBytes bounds the events of one Append or AppendMulti, data
	// and metadata together (REQUEST_TOO_LARGE).
	MaxAppendBytes int

	// The resource limits (limits.go; 0 means the default). Each refusal
	// is RESOURCE_EXHAUSTED with the reason named.

	// MaxAppendEvents bounds the events of one Append, one AppendMulti
	// (all its appends) and one AppendStream message (TOO_MANY_EVENTS),
	// counted in the wire bytes before the request is decoded.
	MaxAppendEvents int
	// MaxRequestDecodedBytes bounds an append request's estimated decoded
	// size, its wire size plus decodedEventBytes per event
	// (REQUEST_TOO_LARGE), checked before it is decoded.
	MaxRequestDecodedBytes int
	// MaxConnections bounds the open connections; one more is closed at
	// once (counted as TOO_MANY_CONNECTIONS).
	MaxConnections int
	// MaxSubscriptions and MaxSubscriptionsPerConnection bound the
	// Subscribe and consumer group Join calls running
	// (TOO_MANY_SUBSCRIPTIONS).
	MaxSubscriptions              int
	MaxSubscriptionsPerConnection int
	// SubscriptionMemoryBytes is shared equally by the subscribers: one
	// that holds more than its share in messages the client has not read
	// is ended (SUBSCRIBER_TOO_SLOW).
	SubscriptionMemoryBytes int64
	// SubscriberStallTimeout is how long a subscriber may hold more than
	// its share before it is ended.
	SubscriberStallTimeout time.Duration
	// MaxInflightBytes and MaxInflightBytesPerConnection bound the event
	// bytes of appends in flight (INFLIGHT_BYTES).
	MaxInflightBytes              int64
	MaxInflightBytesPerConnection int64
	// LargeAppendRate bounds the event bytes a second of appends over
	// 64 KiB that reach the store; they wait for their turn. Negative:
	// no bound.
	LargeAppendRate int64
}

// DefaultLimits are docs/api.md's defaults.
var DefaultLimits = Limits{
	MaxEventBytes:                 1 << 20,
	MaxAppendBytes:                16 << 20,
	MaxAppendEvents:               defaultMaxAppendEvents,
	MaxRequestDecodedBytes:        defaultMaxRequestDecodedBytes,
	MaxConnections:                defaultMaxConnections,
	MaxSubscriptions:              defaultMaxSubscriptions,
	MaxSubscriptionsPerConnection: defaultMaxSubscriptionsPerConnection,
	SubscriptionMemoryBytes:       defaultSubscriptionMemoryBytes,
	SubscriberStallTimeout:        defaultSubscriberStallTimeout,
	MaxInflightBytes:              defaultMaxInflightBytes,
	MaxInflightBytesPerConnection: defaultMaxInflightBytesPerConnection,
	LargeAppendRate:               defaultLargeAppendRate,
}

// validator collects every bad field of a request.
type validator struct {
	lim        Limits
	cur        string // the stream of the entry being validated
	stream     string // the stream of the first violation (ErrorInfo metadata)
	reason     string
	violations []*errdetails.BadRequest_FieldViolation
}

func (v *validator) bad(reason, field, format string, args ...any) {
	if v.reason == "" {
		v.reason = reason
		if v.cur != "" {
			v.stream = v.cur
		}
	}
	v.violations = append(v.violations, &errdetails.BadRequest_FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error {
	if len(v.violations) == 0 {
		return nil
	}
	return &invalidError{reason: v.reason, stream: v.stream, violations: v.violations}
}

// streamValidator is a validator for a request on one stream, field
// "stream", its name checked already (system names only for reads).
func streamValidator(name string, write bool) validator {
	v := validator{stream: name}
	v.streamName("stream", name, write)
	return v
}

// streamName checks a stream name; system names ("$...") only for reads.
func (v *validator) streamName(field, name string, write bool) {
	switch {
	case name == "":
		v.bad(reasonInvalidArgument, field, "stream name is empty")
	case len(name) > maxStreamNameBytes:
		v.bad(reasonInvalidArgument, field, "stream name of %d bytes, at most %d", len(name), maxStreamNameBytes)
	case !printableUTF8(name):
		v.bad(reasonInvalidArgument, field, "stream name must be UTF-8 without control characters")
	case write && name[0] == '$':
		v.bad(reasonInvalidArgument, field, "stream names starting with $ are reserved for system streams")
	}
}

// category checks a category, the part of a stream name before its first
// '-'; system, when not empty, refuses a system category ("$...").
func (v *validator) category(field, c, system string) {
	switch {
	case c == "" || len(c) > maxStreamNameBytes || !printableUTF8(c):
		v.bad(reasonInvalidArgument, field, "a category is 1 to %d bytes of UTF-8 without control characters", maxStreamNameBytes)
	case system != "" && c[0] == '$':
		v.bad(reasonInvalidArgument, field, "%s", system)
	case strings.Contains(c, "-"):
		v.bad(reasonInvalidArgument, field, "a category is the part of a stream name before its first '-': it has none")
	}
}

// duration checks an optional duration field: unset (nil) it is 0 and
// not ok; set, it must be a valid duration for which in holds, else it
// is reported under field with the message format. It returns the
// duration as given, and whether it is set and good.
func (v *validator) duration(field string, d *durationpb.Duration, in func(time.Duration) bool, format string, args ...any) (time.Duration, bool) {
	if d == nil {
		return 0, false
	}
	if d.CheckValid() != nil || !in(d.AsDuration()) {
		v.bad(reasonInvalidArgument, field, format, args...)
		return d.AsDuration(), false
	}
	return d.AsDuration(), true
}

// newName refuses, in a name an append writes (a stream name or an event
// type; what names it in the messages), what would let it pass for
// another name: a form other than Unicode NFC (so that "é" is one name,
// not two), whitespace at either end or other than the plain space, and
// invisible characters (format characters such as the zero-width space,
// default-ignorable code points such as the Hangul fillers, variation
// selectors, noncharacters). A reader filtering $all by a name, or a
// person reading a listing, then sees every name as it is. Reads accept
// any name stored before these checks.
func (v *validator) newName(field, what, name string) {
	if name == "" || !printableUTF8(name) {
		return // reported by streamName or typeName
	}
	if !norm.NFC.IsNormalString(name) {
		v.bad(reasonInvalidArgument, field, "%s must be in Unicode normalization form C (NFC)", what)
		return
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		v.bad(reasonInvalidArgument, field, "%s must not start or end with whitespace", what)
		return
	}
	for _, r := range name {
		switch {
		case unicode.IsSpace(r) && r != ' ':
			v.bad(reasonInvalidArgument, field, "%s must not hold the whitespace character %U (only the plain space)", what, r)
			return
		case invisible(r):
			v.bad(reasonInvalidArgument, field, "%s must not hold the invisible character %U", what, r)
			return
		}
	}
}

// invisible reports whether r shows nothing, or nothing of its own.
func invisible(r rune) bool {
	return unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) ||
		unicode.Is(unicode.Variation_Selector, r) || unicode.Is(unicode.Noncharacter_Code_Point, r) ||
		unicode.Is(unicode.Co, r)
}

// typeName checks an event's or a snapshot's type; what names it in the
// messages ("event type", "type").
func (v *validator) typeName(field, what, t string) {
	switch {
	case t == "":
		v.bad(reasonInvalidArgument, field, "%s is required", what)
	case len(t) > maxTypeBytes:
		v.bad(reasonInvalidArgument, field, "%s of %d bytes, at most %d", what, len(t), maxTypeBytes)
	case !printableUTF8(t):
		v.bad(reasonInvalidArgument, field, "%s must be UTF-8 without control characters", what)
	}
}

func printableUTF8(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// expectation converts the expected_revision oneof (nil means any).
func expectation(x any) eslog.Expectation {
	switch e := x.(type) {
	case *esdv1.AppendRequest_NoStream, *esdv1.DeleteStreamRequest_NoStream:
		return eslog.Expectation{Kind: eslog.ExpectNoStream}
	case *esdv1.AppendRequest_StreamExists, *esdv1.DeleteStreamRequest_StreamExists:
		return eslog.Expectation{Kind: eslog.ExpectExists}
	case *esdv1.AppendRequest_Exact:
		return eslog.Expectation{Kind: eslog.ExpectExact, Revision: e.Exact}
	case *esdv1.DeleteStreamRequest_Exact:
		return eslog.Expectation{Kind: eslog.ExpectExact, Revision: e.Exact}
	default:
		return eslog.Expectation{Kind: eslog.ExpectAny}
	}
}

// appendOp validates one AppendRequest (field names under prefix) and
// converts it; ids collects the ids seen so far, to refuse repeats.
func (v *validator) appendOp(prefix string, req *esdv1.AppendRequest, ids map[[16]byte]string, total *int) engine.AppendOp {
	v.cur = req.GetStream()
	v.streamName(prefix+"stream", req.GetStream(), true)
	v.newName(prefix+"stream", "stream name", req.GetStream())
	op := engine.AppendOp{Stream: req.GetStream(), Expect: expectation(req.GetExpectedRevision()), Token: req.GetFencingToken()}
	if req != nil && req.ConflictDeltaEvents != nil { // req is nil for an AppendStream request without its append
		op.DeltaEvents = -1 // 0: none
		if n := req.GetConflictDeltaEvents(); n > 0 {
			op.DeltaEvents = int(min(n, 1<<16)) // the engine takes at most 16
		}
	}
	if len(req.GetEvents()) > 0 {
		op.Events = make([]eslog.Event, len(req.GetEvents()))
	}
	for i, pe := range req.GetEvents() {
		f := fmt.Sprintf("%sevents[%d].", prefix, i)
		ev := &op.Events[i]
		if pe.GetId() != "" {
			id, err := parseID(pe.GetId())
			if err != nil {
				v.bad(reasonInvalidArgument, f+"id", "%v", err)
			} else if first, dup := ids[id]; dup {
				v.bad(reasonInvalidArgument, f+"id", "event id repeats %s", first)
			} else {
				ids[id] = f + "id"
				ev.ID = id
				op.ClientIDs++
			}
		} else {
			ev.ID = eslog.NewEventID()
		}
		v.typeName(f+"type", "event type", pe.GetType())
		v.newName(f+"type", "event type", pe.GetType())
		if strings.HasPrefix(pe.GetType(), "$") {
			v.bad(reasonInvalidArgument, f+"type", "event types starting with $ are reserved for the server's own events")
		}
		if n := len(pe.GetData()); n > v.lim.MaxEventBytes {
			v.bad(reasonEventTooLarge, f+"data", "event data of %d bytes, at most %d", n, v.lim.MaxEventBytes)
		}
		if n := len(pe.GetMetadata()); n > maxMetadataBytes {
			v.bad(reasonEventTooLarge, f+"metadata", "event metadata of %d bytes, at most %d", n, maxMetadataBytes)
		}
		ct := pe.GetContentType()
		if len(ct) > maxContentTypeBytes || !printableUTF8(ct) {
			v.bad(reasonInvalidArgument, f+"content_type", "content type must be at most %d bytes of UTF-8 without control characters", maxContentTypeBytes)
		}
		if ct == defaultContentType {
			ct = "" // stored as empty, read back as the default
		}
		if len(pe.GetTags()) > maxTags {
			v.bad(reasonInvalidArgument, f+"tags", "%d tags, at most %d", len(pe.GetTags()), maxTags)
		}
		for j, tag := range pe.GetTags() {
			if tag == "" || len(tag) > maxTagBytes || !printableUTF8(tag) {
				v.bad(reasonInvalidArgument, fmt.Sprintf("%stags[%d]", f, j), "a tag is 1 to %d bytes of UTF-8 without control characters", maxTagBytes)
			}
		}
		ev.Type, ev.ContentType, ev.Tags = pe.GetType(), ct, pe.GetTags()
		ev.Data, ev.Metadata = pe.GetData(), pe.GetMetadata()
		*total += len(ev.Data) + len(ev.Metadata)
	}
	return op
}

func (v *validator) checkTotal(field string, total int) {
	if total > v.lim.MaxAppendBytes {
		v.bad(reasonRequestTooLarge, field, "events of %d bytes in all, at most %d in one request", total, v.lim.MaxAppendBytes)
	}
}

const defaultContentType = "application/octet-stream"

// parseID parses a UUID in canonical 36-character form only.
func parseID(s string) ([16]byte, error) {
	var id [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, fmt.Errorf("event id %q is not a UUID in canonical 36-character form", truncate(s, 64))
	}
	var hexs [32]byte
	copy(hexs[0:8], s[0:8])
	copy(hexs[8:12], s[9:13])
	copy(hexs[12:16], s[14:18])
	copy(hexs[16:20], s[19:23])
	copy(hexs[20:32], s[24:36])
	if _, err := hex.Decode(id[:], hexs[:]); err != nil {
		return id, fmt.Errorf("event id %q is not a UUID in canonical 36-character form", truncate(s, 64))
	}
	if id == [16]byte{} {
		return id, fmt.Errorf("event id is the nil UUID")
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// validateAppend validates an AppendRequest.
func validateAppend(lim Limits, req *esdv1.AppendRequest) (engine.AppendOp, error) {
	v := validator{lim: lim}
	total := 0
	op := v.appendOp("", req, make(map[[16]byte]string), &total)
	v.checkTotal("events", total)
	return op, v.err()
}

// validateAppendMulti validates an AppendMultiRequest.
func validateAppendMulti(lim Limits, req *esdv1.AppendMultiRequest) ([]engine.AppendOp, error) {
	v := validator{lim: lim}
	n := len(req.GetAppends())
	switch {
	case n == 0:
		v.bad(reasonInvalidArgument, "appends", "no appends")
	case n > maxMultiEntries:
		v.bad(reasonInvalidArgument, "appends", "%d appends, at most %d", n, maxMultiEntries)
		return nil, v.err()
	}
	ids := make(map[[16]byte]string)
	streams := make(map[string]int)
	ops := make([]engine.AppendOp, n)
	total := 0
	for i, a := range req.GetAppends() {
		prefix := fmt.Sprintf("appends[%d].", i)
		ops[i] = v.appendOp(prefix, a, ids, &total)
		if j, dup := streams[a.GetStream()]; dup && a.GetStream() != "" {
			v.bad(reasonInvalidArgument, prefix+"stream", "stream %q appears in appends[%d] too: a stream may appear once", truncate(a.GetStream(), 64), j)
		}
		streams[a.GetStream()] = i
	}
	v.cur = "" // the total is no one entry's fault
	v.checkTotal("appends", total)
	return ops, v.err()
}

func validateDelete(req *esdv1.DeleteStreamRequest) (eslog.Expectation, eslog.DeleteMode, error) {
	v := streamValidator(req.GetStream(), true)
	mode := eslog.DeleteSoft
	if req.GetTombstone() {
		mode = eslog.DeleteTombstone
	}
	return expectation(req.GetExpectedRevision()), mode, v.err()
}

func validateDirection(v *validator, d esdv1.ReadDirection) bool {
	switch d {
	case esdv1.ReadDirection_READ_DIRECTION_UNSPECIFIED, esdv1.ReadDirection_READ_DIRECTION_FORWARD:
		return false
	case esdv1.ReadDirection_READ_DIRECTION_BACKWARD:
		return true
	default:
		v.bad(reasonInvalidArgument, "direction", "unknown direction %d", d)
		return false
	}
}

func validateReadStream(req *esdv1.ReadStreamRequest) (eslog.StreamQuery, error) {
	v := streamValidator(req.GetStream(), false)
	q := eslog.StreamQuery{
		Stream:   req.GetStream(),
		From:     req.GetFromRevision(),
		FromSet:  req.FromRevision != nil,
		Backward: validateDirection(&v, req.GetDirection()),
		Max:      req.GetMaxCount(),
	}
	return q, v.err()
}

func validateFilter(v *validator, f *esdv1.Filter) (streams, types []string) {
	check := func(field string, ps []string) {
		if len(ps) > maxFilterPrefixes {
			v.bad(reasonInvalidArgument, field, "%d prefixes, at most %d", len(ps), maxFilterPrefixes)
		}
		for i, p := range ps {
			if p == "" || len(p) > maxStreamNameBytes || !printableUTF8(p) {
				v.bad(reasonInvalidArgument, fmt.Sprintf("%s[%d]", field, i), "a prefix is 1 to %d bytes of UTF-8 without control characters", maxStreamNameBytes)
			}
		}
	}
	check("filter.stream_prefixes", f.GetStreamPrefixes())
	check("filter.event_type_prefixes", f.GetEventTypePrefixes())
	return f.GetStreamPrefixes(), f.GetEventTypePrefixes()
}

func validateReadAll(req *esdv1.ReadAllRequest) (eslog.AllQuery, error) {
	var v validator
	q := eslog.AllQuery{
		From:     req.GetFromPosition(),
		Backward: validateDirection(&v, req.GetDirection()),
		Max:      req.GetMaxCount(),
	}
	if req.FromPosition != nil && q.From == 0 {
		if q.Backward {
			v.bad(reasonInvalidArgument, "from_position", "positions start at 1; backward from 0 reads nothing")
		}
		q.From = 1 // forward from 0 is from the start
	}
	q.StreamPrefixes, q.TypePrefixes = validateFilter(&v, req.GetFilter())
	return q, v.err()
}

// validateSubscribe converts a SubscribeRequest.
func validateSubscribe(req *esdv1.SubscribeRequest) (subscription.Request, error) {
	var v validator
	var r subscription.Request
	switch t := req.GetTarget().(type) {
	case *esdv1.SubscribeRequest_Stream:
		r.Target, r.Name = subscription.TargetStream, t.Stream
		v.stream = t.Stream
		v.streamName("stream", t.Stream, false)
	case *esdv1.SubscribeRequest_Category:
		r.Target, r.Name = subscription.TargetCategory, t.Category
		v.category("category", t.Category, "")
	case *esdv1.SubscribeRequest_All:
		r.Target = subscription.TargetAll
	default:
		v.bad(reasonInvalidArgument, "target", "set one of stream, category or all")
	}
	switch f := req.GetFrom().(type) {
	case nil, *esdv1.SubscribeRequest_Start:
		r.Start = subscription.FromStart
	case *esdv1.SubscribeRequest_End:
		r.Start = subscription.FromEnd
	case *esdv1.SubscribeRequest_AfterRevision:
		r.Start, r.After = subscription.AfterRevision, f.AfterRevision
		if r.Target != subscription.TargetStream {
			v.bad(reasonInvalidArgument, "after_revision", "after_revision is for a stream target; use after_position")
		}
	case *esdv1.SubscribeRequest_AfterPosition:
		r.Start, r.After = subscription.AfterPosition, f.AfterPosition
		if r.Target == subscription.TargetStream {
			v.bad(reasonInvalidArgument, "after_position", "after_position is for category and all targets; use after_revision")
		}
	}
	if req.GetFilter() != nil {
		if r.Target != subscription.TargetAll {
			v.bad(reasonInvalidArgument, "filter", "a filter is for the all target")
		}
		r.StreamPrefixes, r.TypePrefixes = validateFilter(&v, req.GetFilter())
	}
	return r, v.err()
}
