package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// newStreamCmd is the stream noun: its metadata, for now.
func (a *app) newStreamCmd() *cobra.Command {
	cmd := a.groupCmd("stream", "Manage streams: their metadata and retention limits")
	cmd.AddCommand(a.newStreamMetaCmd())
	return cmd
}

func (a *app) newStreamMetaCmd() *cobra.Command {
	cmd := a.groupCmd("meta", "Get or set a stream's metadata, or a category's default limits")
	cmd.AddCommand(a.newMetaGetCmd(), a.newMetaSetCmd())
	return cmd
}

// metaTarget is STREAM or --category C, exactly one.
type metaTarget struct {
	category string
}

func (t *metaTarget) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.category, "category", "", "a category (the part of stream names before the first '-') instead of a stream")
}

// resolve returns the stream or the category named.
func (t *metaTarget) resolve(args []string) (stream, category string, err error) {
	switch {
	case len(args) == 1 && t.category != "":
		return "", "", usagef("give a STREAM or --category, not both")
	case len(args) == 1:
		return args[0], "", nil
	case t.category != "":
		return "", t.category, nil
	}
	return "", "", usagef("give a STREAM or --category")
}

func (a *app) newMetaGetCmd() *cobra.Command {
	var t metaTarget
	cmd := &cobra.Command{
		Use:   "get [STREAM] [--category C]",
		Short: "Show a stream's metadata and the limits that apply to it, or a category's defaults",
		Args:  cobra.MaximumNArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			stream, category, err := t.resolve(args)
			if err != nil {
				return err
			}
			req := &esdv1.GetStreamMetadataRequest{Target: &esdv1.GetStreamMetadataRequest_Stream{Stream: stream}}
			if category != "" {
				req.Target = &esdv1.GetStreamMetadataRequest_Category{Category: category}
			}
			return a.runMetaGet(cmd.Context(), req)
		}),
	}
	t.register(cmd)
	return cmd
}

func (a *app) runMetaGet(ctx context.Context, req *esdv1.GetStreamMetadataRequest) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	resp, err := cli.StreamMetadata(ctx, req)
	if err != nil {
		return err
	}
	rev := "-" // no metadata
	if resp.GetExists() {
		rev = strconv.FormatUint(resp.GetMetadataRevision(), 10)
	}
	md, eff := resp.GetMetadata(), resp.GetEffectiveLimits()
	if md == nil { // unset fields are read below for their presence
		md = &esdv1.StreamMetadata{}
	}
	if eff == nil {
		eff = &esdv1.StreamMetadata{}
	}
	rows := [][2]string{
		{"METADATA REVISION", rev},
		{"MAX COUNT", optU64(md.MaxCount)},
		{"MAX AGE", optDuration(md.GetMaxAge())},
		{"TRUNCATE BEFORE", optU64(md.TruncateBefore)},
		{"CUSTOM JSON", orDash(md.GetCustomJson())},
	}
	if _, stream := req.GetTarget().(*esdv1.GetStreamMetadataRequest_Stream); stream {
		rows = append(rows,
			[2]string{"EFFECTIVE MAX COUNT", optU64(eff.MaxCount)},
			[2]string{"EFFECTIVE MAX AGE", optDuration(eff.GetMaxAge())},
			[2]string{"EFFECTIVE TRUNCATE BEFORE", optU64(eff.TruncateBefore)})
	}
	return a.printKV(resp, rows)
}

func optU64(p *uint64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatUint(*p, 10)
}

func optDuration(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return d.AsDuration().String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type metaSetOptions struct {
	target         metaTarget
	maxCount       uint64
	maxAge         time.Duration
	truncateBefore uint64
	json           string
	expected       string
}

func (a *app) newMetaSetCmd() *cobra.Command {
	var o metaSetOptions
	cmd := &cobra.Command{
		Use:   "set [STREAM] [--category C] [--max-count N] [--max-age D] [--truncate-before R] [--json '{...}'] [--expected-revision R]",
		Short: "Set a stream's metadata, or a category's default limits",
		Long: `Set the metadata of STREAM (or with --category, the default max count and
max age of the category's streams), whole: a limit not given is no longer
set. Limits hide older events from every read at once; until a scavenge
they are a view: raising or removing one shows the events again. A
scavenge makes their cut durable and removes what they hide.

--expected-revision is any (the default), none (no metadata yet) or a
metadata revision; a wrong one fails with WRONG_EXPECTED_METADATA_REVISION.`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			req, err := o.request(cmd, args)
			if err != nil {
				return err
			}
			return a.runMetaSet(cmd.Context(), req)
		}),
	}
	o.target.register(cmd)
	f := cmd.Flags()
	f.Uint64Var(&o.maxCount, "max-count", 0, "keep only the newest N events (at least 1)")
	f.DurationVar(&o.maxAge, "max-age", 0, "keep only the events committed within D of now, e.g. 720h")
	f.Uint64Var(&o.truncateBefore, "truncate-before", 0, "hide the revisions below R (streams only)")
	f.StringVar(&o.json, "json", "", "free-form JSON for applications, at most 64 KiB (streams only)")
	f.StringVar(&o.expected, "expected-revision", "any", "any, none, or the metadata revision it must be at")
	return cmd
}

// request builds the request of set from its arguments and flags; only
// the limits given are set.
func (o *metaSetOptions) request(cmd *cobra.Command, args []string) (*esdv1.SetStreamMetadataRequest, error) {
	stream, category, err := o.target.resolve(args)
	if err != nil {
		return nil, err
	}
	req := &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Stream{Stream: stream}, Metadata: &esdv1.StreamMetadata{}}
	if category != "" {
		req.Target = &esdv1.SetStreamMetadataRequest_Category{Category: category}
	}
	switch e := strings.ToLower(o.expected); e {
	case "any":
		req.ExpectedMetadataRevision = &esdv1.SetStreamMetadataRequest_Any{Any: &emptypb.Empty{}}
	case "none", "no-metadata", "no_metadata":
		req.ExpectedMetadataRevision = &esdv1.SetStreamMetadataRequest_NoMetadata{NoMetadata: &emptypb.Empty{}}
	default:
		n, err := strconv.ParseUint(e, 10, 64)
		if err != nil {
			return nil, usagef("--expected-revision %q: want any, none or a metadata revision", o.expected)
		}
		req.ExpectedMetadataRevision = &esdv1.SetStreamMetadataRequest_Exact{Exact: n}
	}
	f := cmd.Flags()
	md := req.Metadata
	if f.Changed("max-count") {
		if o.maxCount == 0 {
			return nil, usagef("--max-count must be at least 1")
		}
		md.MaxCount = &o.maxCount
	}
	if f.Changed("max-age") {
		if o.maxAge <= 0 {
			return nil, usagef("--max-age must be positive")
		}
		md.MaxAge = durationpb.New(o.maxAge)
	}
	if f.Changed("truncate-before") {
		md.TruncateBefore = &o.truncateBefore
	}
	if o.json != "" {
		if !json.Valid([]byte(o.json)) {
			return nil, usagef("--json is not valid JSON")
		}
		md.CustomJson = o.json
	}
	return req, nil
}

func (a *app) runMetaSet(ctx context.Context, req *esdv1.SetStreamMetadataRequest) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	rev, err := cli.SetStreamMetadata(ctx, req)
	if err != nil {
		return err
	}
	return a.printKV(&esdv1.SetStreamMetadataResponse{MetadataRevision: rev}, [][2]string{{"METADATA REVISION", strconv.FormatUint(rev, 10)}})
}
