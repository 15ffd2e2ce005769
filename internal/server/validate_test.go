package server

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Table tests of request validation (validate.go). Helpers here start
// with "vt" so as not to meet the gRPC tests' helpers of this package.

// vtLimits are small limits, so that the size rules are cheap to cross.
var vtLimits = Limits{MaxEventBytes: 8, MaxAppendBytes: 20}

const vtID = "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"

func vtEv(typ string) *esdv1.ProposedEvent { return &esdv1.ProposedEvent{Type: typ} }

func vtEvID(id, typ string) *esdv1.ProposedEvent { return &esdv1.ProposedEvent{Id: id, Type: typ} }

func vtAppend(stream string, evs ...*esdv1.ProposedEvent) *esdv1.AppendRequest {
	return &esdv1.AppendRequest{Stream: stream, Events: evs}
}

// vtUUID returns the n-th of a set of distinct canonical ids.
func vtUUID(n int) string { return fmt.Sprintf("00000000-0000-7000-8000-%012x", n+1) }

// vtInvalid checks that err is an *invalidError with the reason, the
// stream and exactly the violated fields, in order.
func vtInvalid(t *testing.T, err error, reason, stream string, fields ...string) *invalidError {
	t.Helper()
	var ie *invalidError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T), want *invalidError", err, err)
	}
	var got []string
	for _, v := range ie.violations {
		got = append(got, v.GetField())
		if v.GetDescription() == "" {
			t.Errorf("violation of %s without a description", v.GetField())
		}
	}
	if ie.reason != reason || ie.stream != stream || !slices.Equal(got, fields) {
		t.Fatalf("invalidError{reason %s, stream %q, fields %q}, want {%s, %q, %q}\n%v", ie.reason, ie.stream, got, reason, stream, fields, err)
	}
	if !strings.HasPrefix(ie.Error(), "invalid request: "+fields[0]+": ") {
		t.Fatalf("Error() = %q", ie.Error())
	}
	return ie
}

func TestParseID(t *testing.T) {
	accept := []string{
		vtID,
		strings.ToUpper(vtID),
		"0189A1B2-c3d4-7E5F-8a9b-0C1D2E3F4A5B",
		"ffffffff-ffff-ffff-ffff-ffffffffffff",
		"00000000-0000-0000-0000-000000000001",
		"6ba7b810-9dad-11d1-80b4-00c04fd430c8", // v1: any version is accepted
	}
	for _, s := range accept {
		t.Run("accept "+s, func(t *testing.T) {
			id, err := parseID(s)
			if err != nil {
				t.Fatal(err)
			}
			if want := uuid.MustParse(s); id != want {
				t.Fatalf("parseID(%s) = %x, want %x", s, id, want)
			}
			if got := eslog.FormatID(id); got != strings.ToLower(s) {
				t.Fatalf("FormatID(parseID(%s)) = %s", s, got)
			}
		})
	}
	reject := map[string]string{
		"empty":                 "",
		"braces":                "{" + vtID + "}",
		"urn":                   "urn:uuid:" + vtID,
		"32 hex":                strings.ReplaceAll(vtID, "-", ""),
		"missing one hyphen":    strings.Replace(vtID, "-", "", 1),
		"hyphens misplaced":     "0189a1b-2c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"hyphen for hex digit":  "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a-b",
		"nil":                   "00000000-0000-0000-0000-000000000000",
		"non-hex digit":         "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",
		"sign":                  "+189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"leading space":         " " + vtID[1:],
		"trailing space":        vtID + " ",
		"trailing newline":      vtID + "\n",
		"too long":              vtID + "0",
		"too short":             vtID[:35],
		"underscores":           strings.ReplaceAll(vtID, "-", "_"),
		"full-width digit":      "０189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a"[:36],
		"invalid utf-8":         "\xff189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"base64":                "AYmhssPUfl+Kmwwdbj9KWw==",
		"uuid with extra group": "0189a1b2-c3d4-7e5f-8a9b-0c1d-2e3f4a5b",
	}
	for name, s := range reject {
		t.Run("reject "+name, func(t *testing.T) {
			if id, err := parseID(s); err == nil {
				t.Fatalf("parseID(%q) = %x, want an error", s, id)
			} else if !strings.Contains(err.Error(), "event id") {
				t.Fatalf("parseID(%q): %v", s, err)
			}
		})
	}
	// The error message quotes at most 64 bytes of a long id.
	_, err := parseID(strings.Repeat("x", 10000))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error for a long id: %.300v", err)
	}
}

func TestValidatePrintableUTF8(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"", true}, {"abc", true}, {"product-42", true}, {"a b", true}, {"ü-名前-🙂", true},
		{"\u00a0", true}, {"\u2028", true}, {"\ufeff", true}, {"\u200b", true}, // not Cc
		{"\t", false}, {"\n", false}, {"a\rb", false}, {"\x00", false}, {"\x1f", false}, {"\x7f", false},
		{"\u0080", false}, {"\u0085", false}, {"\u009f", false},
		{"\xff", false}, {"\xc3", false}, {"a\xc3(", false}, {"\xed\xa0\x80", false}, // invalid, truncated, surrogate
		{"\xef\xbf\xbd", true}, // U+FFFD itself is valid text
	}
	for _, tc := range tests {
		if got := printableUTF8(tc.s); got != tc.want {
			t.Errorf("printableUTF8(%q) = %t, want %t", tc.s, got, tc.want)
		}
	}
}

func TestValidateAppend(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tags := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprint("t", i))
		}
		return out
	}
	withEvents := func(evs ...*esdv1.ProposedEvent) *esdv1.AppendRequest { return vtAppend("s", evs...) }
	tests := []struct {
		name   string
		lim    Limits // zero: vtLimits
		req    *esdv1.AppendRequest
		reason string   // "" means valid
		fields []string // the violated fields, in order
	}{
		{name: "one event", req: withEvents(vtEv("T"))},
		{name: "no events", req: withEvents()},
		{name: "nil request", req: nil, reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "unicode stream", req: vtAppend("ü-名前-1", vtEv("T"))},
		{name: "stream of 512 bytes", req: vtAppend(long(512), vtEv("T"))},
		{name: "stream of 513 bytes", req: vtAppend(long(513), vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "empty stream", req: vtAppend("", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "system stream", req: vtAppend("$deleted", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "dollar inside", req: vtAppend("a$b", vtEv("T"))},
		{name: "stream with newline", req: vtAppend("a\nb", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with C1 control", req: vtAppend("a\u0085b", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream not UTF-8", req: vtAppend("a\xffb", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		// Names that would pass for others: not NFC, whitespace at the
		// ends or other than the space, invisible characters.
		{name: "stream with a space inside", req: vtAppend("order 42", vtEv("T"))},
		{name: "stream in NFC", req: vtAppend("caf\u00e9-1", vtEv("T"))},
		{name: "stream not in NFC", req: vtAppend("cafe\u0301-1", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a leading space before $", req: vtAppend(" $deleted", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a trailing space", req: vtAppend("order-1 ", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a no-break space", req: vtAppend("order\u00a01", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a zero-width space before $", req: vtAppend("\u200b$deleted", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a zero-width joiner", req: vtAppend("order\u200d-1", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a byte order mark", req: vtAppend("\ufefforder-1", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a Hangul filler", req: vtAppend("order-\u3164", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a variation selector", req: vtAppend("order\ufe0f-1", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a private-use character", req: vtAppend("order\ue000-1", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "stream with a noncharacter", req: vtAppend("order\ufdd0-1", vtEv("T")), reason: reasonInvalidArgument, fields: []string{"stream"}},
		{name: "type of the system namespace", req: withEvents(vtEv("T"), vtEv("$stream-deleted")), reason: reasonInvalidArgument, fields: []string{"events[1].type"}},
		{name: "type with $ inside", req: withEvents(vtEv("Price$Changed"))},
		{name: "type with a zero-width space before $", req: withEvents(vtEv("\u200b$stream-deleted")), reason: reasonInvalidArgument, fields: []string{"events[0].type"}},
		{name: "type with a leading space", req: withEvents(vtEv(" Placed")), reason: reasonInvalidArgument, fields: []string{"events[0].type"}},
		{name: "type not in NFC", req: withEvents(vtEv("Cre\u0301e")), reason: reasonInvalidArgument, fields: []string{"events[0].type"}},
		{name: "no type", req: withEvents(vtEv("T"), vtEv("")), reason: reasonInvalidArgument, fields: []string{"events[1].type"}},
		{name: "type of 256 bytes", req: withEvents(vtEv(long(256)))},
		{name: "type of 257 bytes", req: withEvents(vtEv(long(257))), reason: reasonInvalidArgument, fields: []string{"events[0].type"}},
		{name: "type with control", req: withEvents(vtEv("T\x00")), reason: reasonInvalidArgument, fields: []string{"events[0].type"}},
		{name: "type not UTF-8", req: withEvents(vtEv("\xc3")), reason: reasonInvalidArgument, fields: []string{"events[0].type"}},
		{name: "client ids", req: withEvents(vtEvID(vtUUID(0), "T"), vtEv("T"), vtEvID(strings.ToUpper(vtUUID(1)), "T"))},
		{name: "bad id", req: withEvents(vtEv("T"), vtEv("T"), vtEv("T"), vtEvID("{"+vtID+"}", "T")), reason: reasonInvalidArgument, fields: []string{"events[3].id"}},
		{name: "nil id", req: withEvents(vtEvID("00000000-0000-0000-0000-000000000000", "T")), reason: reasonInvalidArgument, fields: []string{"events[0].id"}},
		{name: "repeated id", req: withEvents(vtEvID(vtID, "T"), vtEv("T"), vtEv("T"), vtEvID(vtID, "T")),
			reason: reasonInvalidArgument, fields: []string{"events[3].id"}},
		{name: "repeated id in other case", req: withEvents(vtEvID(vtID, "T"), vtEvID(strings.ToUpper(vtID), "T")),
			reason: reasonInvalidArgument, fields: []string{"events[1].id"}},
		{name: "data at the limit", req: withEvents(&esdv1.ProposedEvent{Type: "T", Data: make([]byte, 8)})},
		{name: "data over the limit", req: withEvents(vtEv("T"), &esdv1.ProposedEvent{Type: "T", Data: make([]byte, 9)}),
			reason: reasonEventTooLarge, fields: []string{"events[1].data"}},
		{name: "metadata at the limit", lim: Limits{MaxEventBytes: 8, MaxAppendBytes: 1 << 20},
			req: withEvents(&esdv1.ProposedEvent{Type: "T", Metadata: make([]byte, 64<<10)})},
		{name: "metadata over the limit", lim: Limits{MaxEventBytes: 8, MaxAppendBytes: 1 << 20},
			req:    withEvents(&esdv1.ProposedEvent{Type: "T", Metadata: make([]byte, 64<<10+1)}),
			reason: reasonEventTooLarge, fields: []string{"events[0].metadata"}},
		{name: "request at the limit", req: withEvents(
			&esdv1.ProposedEvent{Type: "T", Data: make([]byte, 8), Metadata: make([]byte, 2)},
			&esdv1.ProposedEvent{Type: "T", Data: make([]byte, 8), Metadata: make([]byte, 2)})},
		{name: "request over the limit", req: withEvents(
			&esdv1.ProposedEvent{Type: "T", Data: make([]byte, 8), Metadata: make([]byte, 2)},
			&esdv1.ProposedEvent{Type: "T", Data: make([]byte, 8), Metadata: make([]byte, 3)}),
			reason: reasonRequestTooLarge, fields: []string{"events"}},
		{name: "content type of 256 bytes", req: withEvents(&esdv1.ProposedEvent{Type: "T", ContentType: long(256)})},
		{name: "content type of 257 bytes", req: withEvents(&esdv1.ProposedEvent{Type: "T", ContentType: long(257)}),
			reason: reasonInvalidArgument, fields: []string{"events[0].content_type"}},
		{name: "content type with control", req: withEvents(&esdv1.ProposedEvent{Type: "T", ContentType: "text/plain\r\n"}),
			reason: reasonInvalidArgument, fields: []string{"events[0].content_type"}},
		{name: "32 tags of 128 bytes", req: withEvents(&esdv1.ProposedEvent{Type: "T", Tags: append(tags(31), long(128))})},
		{name: "33 tags", req: withEvents(&esdv1.ProposedEvent{Type: "T", Tags: tags(33)}),
			reason: reasonInvalidArgument, fields: []string{"events[0].tags"}},
		{name: "bad tags", req: withEvents(vtEv("T"), &esdv1.ProposedEvent{Type: "T", Tags: []string{"ok", "", long(129), "a\tb", "\xff"}}),
			reason: reasonInvalidArgument, fields: []string{"events[1].tags[1]", "events[1].tags[2]", "events[1].tags[3]", "events[1].tags[4]"}},
		{name: "every bad field, first reason wins", req: &esdv1.AppendRequest{Stream: "$x", Events: []*esdv1.ProposedEvent{
			{Type: "T", Data: make([]byte, 9)},
			{Id: "nope", Type: "", Metadata: make([]byte, 64<<10+1), ContentType: "\x00", Tags: []string{""}},
			{Id: vtID, Type: "T"},
			{Id: vtID, Type: "T"},
		}}, reason: reasonInvalidArgument, fields: []string{
			"stream", "events[0].data", "events[1].id", "events[1].type", "events[1].metadata",
			"events[1].content_type", "events[1].tags[0]", "events[3].id", "events",
		}},
		{name: "size reason first", req: &esdv1.AppendRequest{Stream: "s", Events: []*esdv1.ProposedEvent{
			{Type: "T", Data: make([]byte, 9)}, {Type: ""},
		}}, reason: reasonEventTooLarge, fields: []string{"events[0].data", "events[1].type"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lim := tc.lim
			if lim == (Limits{}) {
				lim = vtLimits
			}
			op, err := validateAppend(lim, tc.req)
			if tc.reason != "" {
				_ = vtInvalid(t, err, tc.reason, tc.req.GetStream(), tc.fields...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			vtCheckOp(t, lim, tc.req, op)
		})
	}
}

// vtCheckOp checks that a valid request became the right engine.AppendOp.
func vtCheckOp(t *testing.T, lim Limits, req *esdv1.AppendRequest, op engine.AppendOp) {
	t.Helper()
	if op.Stream != req.GetStream() || op.Expect != expectation(req.GetExpectedRevision()) || len(op.Events) != len(req.GetEvents()) {
		t.Fatalf("op %+v for %v", op, req)
	}
	clientIDs := 0
	seen := make(map[[16]byte]bool)
	for i, pe := range req.GetEvents() {
		ev := op.Events[i]
		if pe.GetId() != "" {
			clientIDs++
			if got := eslog.FormatID(ev.ID); got != strings.ToLower(pe.GetId()) {
				t.Fatalf("events[%d] id %s from %s", i, got, pe.GetId())
			}
		} else if u := uuid.UUID(ev.ID); u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("events[%d]: server-made id %s is not a UUIDv7", i, u)
		}
		if seen[ev.ID] {
			t.Fatalf("events[%d]: id %s repeats", i, eslog.FormatID(ev.ID))
		}
		seen[ev.ID] = true
		wantCT := pe.GetContentType()
		if wantCT == "application/octet-stream" {
			wantCT = ""
		}
		if ev.Type != pe.GetType() || ev.ContentType != wantCT || !slices.Equal(ev.Tags, pe.GetTags()) ||
			string(ev.Data) != string(pe.GetData()) || string(ev.Metadata) != string(pe.GetMetadata()) {
			t.Fatalf("events[%d] = %+v from %v", i, ev, pe)
		}
		if len(ev.Data) > lim.MaxEventBytes {
			t.Fatalf("events[%d] data of %d bytes accepted", i, len(ev.Data))
		}
	}
	if op.ClientIDs != clientIDs {
		t.Fatalf("ClientIDs %d, want %d", op.ClientIDs, clientIDs)
	}
}

func TestValidateAppendExpectation(t *testing.T) {
	tests := []struct {
		name string
		req  *esdv1.AppendRequest
		want eslog.Expectation
	}{
		{"unset", &esdv1.AppendRequest{}, eslog.Expectation{Kind: eslog.ExpectAny}},
		{"any", &esdv1.AppendRequest{ExpectedRevision: &esdv1.AppendRequest_Any{Any: &emptypb.Empty{}}}, eslog.Expectation{Kind: eslog.ExpectAny}},
		{"no stream", &esdv1.AppendRequest{ExpectedRevision: &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}}, eslog.Expectation{Kind: eslog.ExpectNoStream}},
		{"exists", &esdv1.AppendRequest{ExpectedRevision: &esdv1.AppendRequest_StreamExists{StreamExists: &emptypb.Empty{}}}, eslog.Expectation{Kind: eslog.ExpectExists}},
		{"exact 0", &esdv1.AppendRequest{ExpectedRevision: &esdv1.AppendRequest_Exact{Exact: 0}}, eslog.Expectation{Kind: eslog.ExpectExact}},
		{"exact max", &esdv1.AppendRequest{ExpectedRevision: &esdv1.AppendRequest_Exact{Exact: 1<<64 - 1}}, eslog.Expectation{Kind: eslog.ExpectExact, Revision: 1<<64 - 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Stream, tc.req.Events = "s", []*esdv1.ProposedEvent{vtEv("T")}
			op, err := validateAppend(vtLimits, tc.req)
			if err != nil || op.Expect != tc.want {
				t.Fatalf("expectation %+v, %v; want %+v", op.Expect, err, tc.want)
			}
		})
	}
}

func TestValidateAppendMulti(t *testing.T) {
	many := func(n int) []*esdv1.AppendRequest {
		var out []*esdv1.AppendRequest
		for i := range n {
			out = append(out, vtAppend(fmt.Sprint("s-", i), vtEv("T")))
		}
		return out
	}
	sized := func(stream string, data int) *esdv1.AppendRequest {
		return vtAppend(stream, &esdv1.ProposedEvent{Type: "T", Data: make([]byte, data)})
	}
	tests := []struct {
		name    string
		appends []*esdv1.AppendRequest
		reason  string
		fields  []string
		stream  string // the stream the error names
	}{
		{name: "two streams", appends: []*esdv1.AppendRequest{
			{Stream: "a", ExpectedRevision: &esdv1.AppendRequest_Exact{Exact: 3}, Events: []*esdv1.ProposedEvent{vtEvID(vtUUID(0), "T")}},
			{Stream: "b", ExpectedRevision: &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}},
		}},
		{name: "128 appends", appends: many(128)},
		{name: "129 appends", appends: many(129), reason: reasonInvalidArgument, fields: []string{"appends"}},
		{name: "no appends", reason: reasonInvalidArgument, fields: []string{"appends"}},
		{name: "stream twice", appends: []*esdv1.AppendRequest{vtAppend("a"), vtAppend("b"), vtAppend("a", vtEv("T"))},
			reason: reasonInvalidArgument, stream: "a", fields: []string{"appends[2].stream"}},
		{name: "stream three times", appends: []*esdv1.AppendRequest{vtAppend("a"), vtAppend("a"), vtAppend("a")},
			reason: reasonInvalidArgument, stream: "a", fields: []string{"appends[1].stream", "appends[2].stream"}},
		{name: "empty streams are not duplicates", appends: []*esdv1.AppendRequest{vtAppend(""), vtAppend("")},
			reason: reasonInvalidArgument, fields: []string{"appends[0].stream", "appends[1].stream"}},
		{name: "id in two appends", appends: []*esdv1.AppendRequest{vtAppend("a", vtEvID(vtID, "T")), vtAppend("b", vtEv("T"), vtEvID(vtID, "T"))},
			reason: reasonInvalidArgument, stream: "b", fields: []string{"appends[1].events[1].id"}},
		{name: "field paths", appends: []*esdv1.AppendRequest{vtAppend("a", vtEv("T"), vtEv("T"), vtEv("")), vtAppend("$b", vtEvID("x", "T"))},
			reason: reasonInvalidArgument, stream: "a", fields: []string{"appends[0].events[2].type", "appends[1].stream", "appends[1].events[0].id"}},
		{name: "nil entry", appends: []*esdv1.AppendRequest{vtAppend("a"), nil},
			reason: reasonInvalidArgument, fields: []string{"appends[1].stream"}},
		{name: "event too large", appends: []*esdv1.AppendRequest{sized("a", 8), sized("b", 9)},
			reason: reasonEventTooLarge, stream: "b", fields: []string{"appends[1].events[0].data"}},
		{name: "request at the limit", appends: []*esdv1.AppendRequest{sized("a", 8), sized("b", 8), sized("c", 4)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &esdv1.AppendMultiRequest{Appends: tc.appends}
			ops, err := validateAppendMulti(vtLimits, req)
			if tc.reason != "" {
				// The error names the stream of the entry at fault.
				_ = vtInvalid(t, err, tc.reason, tc.stream, tc.fields...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ops) != len(tc.appends) {
				t.Fatalf("%d ops for %d appends", len(ops), len(tc.appends))
			}
			for i, a := range tc.appends {
				vtCheckOp(t, vtLimits, a, ops[i])
			}
		})
	}
	t.Run("no appends stream", func(t *testing.T) {
		_, err := validateAppendMulti(vtLimits, &esdv1.AppendMultiRequest{})
		vtInvalid(t, err, reasonInvalidArgument, "", "appends")
	})
}

// TestValidateAppendMultiTooLarge: a BadRequest field is a path into the
// request (google.rpc.BadRequest); AppendMultiRequest has no "events".
func TestValidateAppendMultiTooLarge(t *testing.T) {
	big := func(stream string) *esdv1.AppendRequest {
		return vtAppend(stream, &esdv1.ProposedEvent{Type: "T", Data: make([]byte, 8), Metadata: make([]byte, 3)})
	}
	_, err := validateAppendMulti(vtLimits, &esdv1.AppendMultiRequest{Appends: []*esdv1.AppendRequest{big("a"), big("b")}})
	vtInvalid(t, err, reasonRequestTooLarge, "", "appends") // no one entry is at fault
}

func TestValidateReadStream(t *testing.T) {
	u := func(x uint64) *uint64 { return &x }
	tests := []struct {
		name   string
		req    *esdv1.ReadStreamRequest
		want   eslog.StreamQuery
		fields []string
	}{
		{name: "defaults", req: &esdv1.ReadStreamRequest{Stream: "s"}, want: eslog.StreamQuery{Stream: "s"}},
		{name: "from 0 is set", req: &esdv1.ReadStreamRequest{Stream: "s", FromRevision: u(0)}, want: eslog.StreamQuery{Stream: "s", FromSet: true}},
		{name: "backward from 7, max 3", req: &esdv1.ReadStreamRequest{Stream: "s", FromRevision: u(7), Direction: esdv1.ReadDirection_READ_DIRECTION_BACKWARD, MaxCount: 3},
			want: eslog.StreamQuery{Stream: "s", From: 7, FromSet: true, Backward: true, Max: 3}},
		{name: "forward", req: &esdv1.ReadStreamRequest{Stream: "s", Direction: esdv1.ReadDirection_READ_DIRECTION_FORWARD}, want: eslog.StreamQuery{Stream: "s"}},
		{name: "system stream may be read", req: &esdv1.ReadStreamRequest{Stream: "$deleted"}, want: eslog.StreamQuery{Stream: "$deleted"}},
		{name: "512 bytes", req: &esdv1.ReadStreamRequest{Stream: strings.Repeat("s", 512)}, want: eslog.StreamQuery{Stream: strings.Repeat("s", 512)}},
		{name: "empty stream", req: &esdv1.ReadStreamRequest{}, fields: []string{"stream"}},
		{name: "513 bytes", req: &esdv1.ReadStreamRequest{Stream: strings.Repeat("s", 513)}, fields: []string{"stream"}},
		{name: "control", req: &esdv1.ReadStreamRequest{Stream: "s\x00"}, fields: []string{"stream"}},
		{name: "unknown direction", req: &esdv1.ReadStreamRequest{Stream: "s", Direction: 3}, fields: []string{"direction"}},
		{name: "both bad", req: &esdv1.ReadStreamRequest{Stream: "\xff", Direction: -1}, fields: []string{"stream", "direction"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := validateReadStream(tc.req)
			if tc.fields != nil {
				vtInvalid(t, err, reasonInvalidArgument, tc.req.GetStream(), tc.fields...)
				return
			}
			if err != nil || q != tc.want {
				t.Fatalf("query %+v, %v; want %+v", q, err, tc.want)
			}
		})
	}
}

func TestValidateReadAll(t *testing.T) {
	u := func(x uint64) *uint64 { return &x }
	prefixes := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprint("p", i))
		}
		return out
	}
	back := esdv1.ReadDirection_READ_DIRECTION_BACKWARD
	tests := []struct {
		name   string
		req    *esdv1.ReadAllRequest
		want   eslog.AllQuery
		fields []string
	}{
		{name: "defaults", req: &esdv1.ReadAllRequest{}, want: eslog.AllQuery{}},
		{name: "forward from 0 is the start", req: &esdv1.ReadAllRequest{FromPosition: u(0)}, want: eslog.AllQuery{From: 1}},
		{name: "from 5", req: &esdv1.ReadAllRequest{FromPosition: u(5), MaxCount: 2}, want: eslog.AllQuery{From: 5, Max: 2}},
		{name: "backward unset", req: &esdv1.ReadAllRequest{Direction: back}, want: eslog.AllQuery{Backward: true}},
		{name: "backward from 5", req: &esdv1.ReadAllRequest{Direction: back, FromPosition: u(5)}, want: eslog.AllQuery{Backward: true, From: 5}},
		{name: "backward from 0", req: &esdv1.ReadAllRequest{Direction: back, FromPosition: u(0)}, fields: []string{"from_position"}},
		{name: "unknown direction", req: &esdv1.ReadAllRequest{Direction: 9}, fields: []string{"direction"}},
		{name: "filter", req: &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"order-", "$"}, EventTypePrefixes: prefixes(32)}},
			want: eslog.AllQuery{StreamPrefixes: []string{"order-", "$"}, TypePrefixes: prefixes(32)}},
		{name: "33 prefixes", req: &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: prefixes(33)}}, fields: []string{"filter.stream_prefixes"}},
		{name: "bad prefixes", req: &esdv1.ReadAllRequest{Filter: &esdv1.Filter{
			StreamPrefixes:    []string{"ok", "", strings.Repeat("p", 513), strings.Repeat("p", 512)},
			EventTypePrefixes: []string{"a\nb", "\xff"},
		}}, fields: []string{"filter.stream_prefixes[1]", "filter.stream_prefixes[2]", "filter.event_type_prefixes[0]", "filter.event_type_prefixes[1]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := validateReadAll(tc.req)
			if tc.fields != nil {
				vtInvalid(t, err, reasonInvalidArgument, "", tc.fields...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q.From != tc.want.From || q.Backward != tc.want.Backward || q.Max != tc.want.Max ||
				!slices.Equal(q.StreamPrefixes, tc.want.StreamPrefixes) || !slices.Equal(q.TypePrefixes, tc.want.TypePrefixes) {
				t.Fatalf("query %+v, want %+v", q, tc.want)
			}
		})
	}
}

func TestValidateDelete(t *testing.T) {
	tests := []struct {
		name   string
		req    *esdv1.DeleteStreamRequest
		expect eslog.Expectation
		mode   eslog.DeleteMode
		fields []string
	}{
		{name: "soft", req: &esdv1.DeleteStreamRequest{Stream: "s"}, mode: eslog.DeleteSoft},
		{name: "tombstone exact", req: &esdv1.DeleteStreamRequest{Stream: "s", Tombstone: true, ExpectedRevision: &esdv1.DeleteStreamRequest_Exact{Exact: 4}},
			expect: eslog.Expectation{Kind: eslog.ExpectExact, Revision: 4}, mode: eslog.DeleteTombstone},
		{name: "no stream", req: &esdv1.DeleteStreamRequest{Stream: "s", ExpectedRevision: &esdv1.DeleteStreamRequest_NoStream{NoStream: &emptypb.Empty{}}},
			expect: eslog.Expectation{Kind: eslog.ExpectNoStream}, mode: eslog.DeleteSoft},
		{name: "exists", req: &esdv1.DeleteStreamRequest{Stream: "s", ExpectedRevision: &esdv1.DeleteStreamRequest_StreamExists{StreamExists: &emptypb.Empty{}}},
			expect: eslog.Expectation{Kind: eslog.ExpectExists}, mode: eslog.DeleteSoft},
		{name: "any", req: &esdv1.DeleteStreamRequest{Stream: "s", ExpectedRevision: &esdv1.DeleteStreamRequest_Any{Any: &emptypb.Empty{}}}, mode: eslog.DeleteSoft},
		{name: "system stream", req: &esdv1.DeleteStreamRequest{Stream: "$deleted", Tombstone: true}, fields: []string{"stream"}},
		{name: "empty", req: &esdv1.DeleteStreamRequest{}, fields: []string{"stream"}},
		{name: "not UTF-8", req: &esdv1.DeleteStreamRequest{Stream: "\xc3"}, fields: []string{"stream"}},
		{name: "513 bytes", req: &esdv1.DeleteStreamRequest{Stream: strings.Repeat("d", 513)}, fields: []string{"stream"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expect, mode, err := validateDelete(tc.req)
			if tc.fields != nil {
				vtInvalid(t, err, reasonInvalidArgument, tc.req.GetStream(), tc.fields...)
				return
			}
			if err != nil || expect != tc.expect || mode != tc.mode {
				t.Fatalf("%+v %v %v; want %+v %v", expect, mode, err, tc.expect, tc.mode)
			}
		})
	}
}
