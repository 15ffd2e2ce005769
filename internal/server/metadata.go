package server

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/streammeta"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
)

// reasonWrongExpectedMetadataRevision: SetStreamMetadata's expected
// metadata revision did not hold.
const reasonWrongExpectedMetadataRevision = "WRONG_EXPECTED_METADATA_REVISION"

// maxMetadataAge bounds StreamMetadata.max_age: 100 years, far beyond any
// retention and far from time.Duration's limit of about 292 years.
const maxMetadataAge = 36500 * 24 * time.Hour

func (s *streamService) SetStreamMetadata(ctx context.Context, req *esdv1.SetStreamMetadataRequest) (*esdv1.SetStreamMetadataResponse, error) {
	t, exp, md, err := validateSetStreamMetadata(req)
	if err != nil {
		return nil, err
	}
	rev, err := s.eng.StreamMetadata().Set(ctx, t, exp, md)
	if err != nil {
		return nil, err
	}
	return &esdv1.SetStreamMetadataResponse{MetadataRevision: rev}, nil
}

func (s *streamService) GetStreamMetadata(_ context.Context, req *esdv1.GetStreamMetadataRequest) (*esdv1.GetStreamMetadataResponse, error) {
	var v validator
	_, isCategory := req.GetTarget().(*esdv1.GetStreamMetadataRequest_Category)
	t := metadataTarget(&v, req.GetStream(), req.GetCategory(), req.GetTarget() != nil, isCategory)
	if err := v.err(); err != nil {
		return nil, err
	}
	resp := &esdv1.GetStreamMetadataResponse{}
	if e, ok := s.eng.StreamMetadata().Get(t); ok {
		resp.Exists, resp.MetadataRevision, resp.Metadata = true, e.Revision, metadataProto(e.Metadata)
	}
	if !t.Category {
		resp.EffectiveLimits = s.effectiveLimits(t.Name)
	}
	return resp, nil
}

// metadataTarget checks a target of a metadata request (stream or
// category, exactly one: set says one is, category which).
func metadataTarget(v *validator, stream, category string, set, isCategory bool) streammeta.Target {
	switch {
	case !set:
		v.bad(reasonInvalidArgument, "target", "set one of stream or category")
	case isCategory:
		v.category("category", category, "categories starting with $ are of system streams, which have no metadata")
		return streammeta.Target{Name: category, Category: true}
	default:
		v.cur = stream
		v.streamName("stream", stream, true)
	}
	return streammeta.Target{Name: stream}
}

// validateSetStreamMetadata checks every field of req and names each bad
// one.
func validateSetStreamMetadata(req *esdv1.SetStreamMetadataRequest) (streammeta.Target, streammeta.Expected, streammeta.Metadata, error) {
	var v validator
	_, isCategory := req.GetTarget().(*esdv1.SetStreamMetadataRequest_Category)
	t := metadataTarget(&v, req.GetStream(), req.GetCategory(), req.GetTarget() != nil, isCategory)
	var exp streammeta.Expected
	switch e := req.GetExpectedMetadataRevision().(type) {
	case *esdv1.SetStreamMetadataRequest_NoMetadata:
		exp.Kind = streammeta.ExpectNone
	case *esdv1.SetStreamMetadataRequest_Exact:
		exp = streammeta.Expected{Kind: streammeta.ExpectExact, Revision: e.Exact}
	}
	var md streammeta.Metadata
	m := req.GetMetadata()
	if m != nil && m.MaxCount != nil && m.GetMaxCount() == 0 {
		v.bad(reasonInvalidArgument, "metadata.max_count", "max_count is at least 1 (unset: no limit)")
	}
	md.Limits.MaxCount = m.GetMaxCount()
	d := m.GetMaxAge()
	if err := d.CheckValid(); d != nil && err != nil { // a message of its own, with the error
		v.bad(reasonInvalidArgument, "metadata.max_age", "not a valid duration: %v", err)
	} else if age, ok := v.duration("metadata.max_age", d, func(age time.Duration) bool { return age > 0 && age <= maxMetadataAge },
		"max_age %v: positive and at most %v (unset: no limit)", d.AsDuration(), maxMetadataAge); ok {
		md.Limits.MaxAge = age
	}
	md.Limits.TruncateBefore = m.GetTruncateBefore()
	md.CustomJSON = m.GetCustomJson()
	switch j := md.CustomJSON; {
	case len(j) > streammeta.MaxCustomJSONBytes:
		v.bad(reasonInvalidArgument, "metadata.custom_json", "%d bytes, at most %d", len(j), streammeta.MaxCustomJSONBytes)
	case j != "" && !json.Valid([]byte(j)):
		v.bad(reasonInvalidArgument, "metadata.custom_json", "not valid JSON (RFC 8259)")
	}
	if t.Category {
		if m.GetTruncateBefore() != 0 {
			v.bad(reasonInvalidArgument, "metadata.truncate_before", "truncate_before is per stream: a category's defaults are max_count and max_age")
		}
		if md.CustomJSON != "" {
			v.bad(reasonInvalidArgument, "metadata.custom_json", "custom_json is per stream: a category's defaults are max_count and max_age")
		}
	}
	return t, exp, md, v.err()
}

// metadataProto is md as the API gives it; nil fields for limits unset.
func metadataProto(md streammeta.Metadata) *esdv1.StreamMetadata {
	out := &esdv1.StreamMetadata{CustomJson: md.CustomJSON}
	if n := md.Limits.MaxCount; n > 0 {
		out.MaxCount = &n
	}
	if d := md.Limits.MaxAge; d > 0 {
		out.MaxAge = durationpb.New(d)
	}
	if r := md.Limits.TruncateBefore; r > 0 {
		out.TruncateBefore = &r
	}
	return out
}

// withMetadata adds to a GetStream answer the stream's metadata, the
// limits that apply and the first visible revision of st.
func (s *streamService) withMetadata(resp *esdv1.GetStreamResponse, name string, st *eslog.StreamState, ok bool) {
	if e, found := s.eng.StreamMetadata().Get(streammeta.Target{Name: name}); found {
		rev := e.Revision
		resp.Metadata, resp.MetadataRevision = metadataProto(e.Metadata), &rev
	}
	resp.EffectiveLimits = s.effectiveLimits(name)
	if ok && st.Written && !st.Tombstoned {
		first := st.FirstVisible()
		resp.FirstVisibleRevision = &first
	}
}

// effectiveLimits is the retention limits that apply to a stream, its
// own or its category's; nil for none.
func (s *streamService) effectiveLimits(stream string) *esdv1.StreamMetadata {
	lim, ok := s.eng.Log().LimitsOf(stream)
	if !ok {
		return nil
	}
	return metadataProto(streammeta.Metadata{Limits: lim})
}

// wrongMetadataRevision is the status of a *streammeta.WrongRevisionError.
func wrongMetadataRevision(e *streammeta.WrongRevisionError) error {
	actual := "none"
	if e.Exists {
		actual = strconv.FormatUint(e.Actual, 10)
	}
	meta := map[string]string{"actual_metadata_revision": actual}
	if e.Target.Category {
		meta["category"] = e.Target.Name
	} else {
		meta["stream"] = e.Target.Name
	}
	return withInfo(codes.Aborted, e.Error(), reasonWrongExpectedMetadataRevision, meta)
}
