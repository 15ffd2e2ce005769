package server

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	eslog "github.com/esdhq/esd/internal/log"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/emptypb"
)

// vtFuzzRequest builds an AppendRequest from fuzzed parts: n events whose
// ids, types and tags are taken in turn from comma-separated lists.
func vtFuzzRequest(stream string, kind uint8, exact uint64, n uint8, ids, types, tags string,
	data, meta []byte, ctype string, bigMeta bool) *esdv1.AppendRequest {
	req := &esdv1.AppendRequest{Stream: stream}
	switch kind % 5 {
	case 1:
		req.ExpectedRevision = &esdv1.AppendRequest_Any{Any: &emptypb.Empty{}}
	case 2:
		req.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
	case 3:
		req.ExpectedRevision = &esdv1.AppendRequest_StreamExists{StreamExists: &emptypb.Empty{}}
	case 4:
		req.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: exact}
	}
	idList, typeList := strings.Split(ids, ","), strings.Split(types, ",")
	for i := range int(n % 9) {
		pe := &esdv1.ProposedEvent{Id: idList[i%len(idList)], Type: typeList[i%len(typeList)]}
		if i%2 == 0 {
			pe.Data = data
			if tags != "" {
				pe.Tags = strings.Split(tags, ",")
			}
		} else {
			pe.Data = meta
			pe.ContentType = ctype
		}
		if i%3 == 0 {
			pe.Metadata = meta
		}
		if i == 0 && bigMeta {
			pe.Metadata = make([]byte, maxMetadataBytes+len(meta)%2)
		}
		req.Events = append(req.Events, pe)
	}
	return req
}

// vtOracle is an independent statement of docs/api.md's rules: the fields a
// request violates, in the order validateAppend reports them, and the
// reason of the first.
func vtOracle(lim Limits, req *esdv1.AppendRequest) (fields []string, reason string) {
	printable := func(s string) bool { return utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0 }
	bad := func(r, f string) {
		if reason == "" {
			reason = r
		}
		fields = append(fields, f)
	}
	if s := req.GetStream(); s == "" || len(s) > 512 || !printable(s) || s[0] == '$' {
		bad(reasonInvalidArgument, "stream")
	}
	seen := make(map[uuid.UUID]bool)
	total := 0
	for i, pe := range req.GetEvents() {
		f := fmt.Sprintf("events[%d].", i)
		if id := pe.GetId(); id != "" {
			u, err := uuid.Parse(id)
			switch {
			case len(id) != 36 || err != nil || u == uuid.Nil || seen[u]:
				bad(reasonInvalidArgument, f+"id")
			default:
				seen[u] = true
			}
		}
		if t := pe.GetType(); t == "" || len(t) > 256 || !printable(t) {
			bad(reasonInvalidArgument, f+"type")
		}
		if len(pe.GetData()) > lim.MaxEventBytes {
			bad(reasonEventTooLarge, f+"data")
		}
		if len(pe.GetMetadata()) > 64<<10 {
			bad(reasonEventTooLarge, f+"metadata")
		}
		if ct := pe.GetContentType(); len(ct) > 256 || !printable(ct) {
			bad(reasonInvalidArgument, f+"content_type")
		}
		if len(pe.GetTags()) > 32 {
			bad(reasonInvalidArgument, f+"tags")
		}
		for j, tag := range pe.GetTags() {
			if tag == "" || len(tag) > 128 || !printable(tag) {
				bad(reasonInvalidArgument, fmt.Sprintf("%stags[%d]", f, j))
			}
		}
		total += len(pe.GetData()) + len(pe.GetMetadata())
	}
	if total > lim.MaxAppendBytes {
		bad(reasonRequestTooLarge, "events")
	}
	return fields, reason
}

func FuzzValidateAppend(f *testing.F) {
	id1, id2 := "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "0189A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5C"
	f.Add("order-1", uint8(0), uint64(0), uint8(1), "", "Created", "", []byte("{}"), []byte(nil), "", false, uint16(8), uint16(20))
	f.Add("order-1", uint8(4), uint64(7), uint8(3), id1+","+id2+",", "A,B", "x,y", []byte("data"), []byte("m"), "application/json", false, uint16(8), uint16(64))
	f.Add("$system", uint8(2), uint64(0), uint8(2), id1+","+strings.ToUpper(id1), ",T\x00", ",", []byte("0123456789"), []byte{}, "\n", false, uint16(4), uint16(8))
	f.Add("a\xffb", uint8(3), uint64(1), uint8(8), "{"+id1+"}", strings.Repeat("T", 257), strings.Repeat("t,", 33), []byte{}, []byte("meta"), strings.Repeat("c", 257), true, uint16(0), uint16(0))
	f.Add("", uint8(1), uint64(0), uint8(4), "00000000-0000-0000-0000-000000000000,urn:uuid:"+id1, "T", "\u0085", []byte("d"), []byte("dd"), "application/octet-stream", false, uint16(1), uint16(3))
	f.Add(strings.Repeat("s", 512), uint8(0), uint64(0), uint8(5), strings.ReplaceAll(id1, "-", ""), "ü,名前", strings.Repeat("t", 128), []byte("1234"), []byte("12"), "text/plain", false, uint16(4), uint16(100))
	f.Fuzz(func(t *testing.T, stream string, kind uint8, exact uint64, n uint8, ids, types, tags string,
		data, meta []byte, ctype string, bigMeta bool, maxEvent, maxAppend uint16) {
		lim := Limits{MaxEventBytes: int(maxEvent), MaxAppendBytes: int(maxAppend)}
		if bigMeta {
			lim.MaxAppendBytes += 1 << 17
		}
		req := vtFuzzRequest(stream, kind, exact, n, ids, types, tags, data, meta, ctype, bigMeta)
		op, err := validateAppend(lim, req)
		wantFields, wantReason := vtOracle(lim, req)

		if err != nil {
			var ie *invalidError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v (%T), want *invalidError", err, err)
			}
			if len(ie.violations) == 0 {
				t.Fatalf("invalidError without violations: %v", err)
			}
			var fields []string
			for _, v := range ie.violations {
				if v.GetDescription() == "" || !utf8.ValidString(v.GetDescription()) {
					t.Fatalf("violation of %s: description %q", v.GetField(), v.GetDescription())
				}
				fields = append(fields, v.GetField())
			}
			if !slices.Equal(fields, wantFields) || ie.reason != wantReason || ie.stream != stream {
				t.Fatalf("invalidError{reason %s, stream %q, fields %q}; the rules say {%s, %q, %q}",
					ie.reason, ie.stream, fields, wantReason, stream, wantFields)
			}
			return
		}
		if len(wantFields) > 0 {
			t.Fatalf("accepted a request that violates %q", wantFields)
		}
		// Accepted: the op is the request, every event within the limits,
		// ids canonical and unique.
		vtCheckOp(t, lim, req, op)
		total := 0
		for i, ev := range op.Events {
			if ev.Type == "" || len(ev.Type) > maxTypeBytes || len(ev.Metadata) > maxMetadataBytes || len(ev.Tags) > maxTags ||
				len(ev.ContentType) > maxContentTypeBytes || ev.ID == [16]byte{} {
				t.Fatalf("events[%d] out of the limits: %+v", i, ev)
			}
			if id := req.GetEvents()[i].GetId(); id != "" {
				if _, err := parseID(eslog.FormatID(ev.ID)); err != nil || len(id) != 36 {
					t.Fatalf("events[%d]: id %q accepted as %s (%v)", i, id, eslog.FormatID(ev.ID), err)
				}
			}
			total += len(ev.Data) + len(ev.Metadata)
		}
		if total > lim.MaxAppendBytes {
			t.Fatalf("request of %d bytes accepted, at most %d", total, lim.MaxAppendBytes)
		}
	})
}
