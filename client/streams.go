package client

import (
	"context"
	"iter"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/emptypb"
)

// GetStream describes stream: head, event count, whether it exists, is
// deleted or tombstoned. A stream never written is no error: every flag
// is false and Created is unset.
func (c *Client) GetStream(ctx context.Context, stream string) (*esdv1.StreamInfo, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.GetStreamResponse, error) {
		return c.streams.GetStream(ctx, &esdv1.GetStreamRequest{Stream: stream})
	})
	return resp.GetInfo(), err
}

// DeleteStream soft-deletes stream if its revision is as expected: it
// reads as deleted until appended to again, and revisions go on after
// the old head. With tombstone the stream is deleted forever (later
// appends fail with STREAM_TOMBSTONED). It is not retried: a delete that
// was done and retried would fail, or delete the events appended since.
func (c *Client) DeleteStream(ctx context.Context, stream string, expected Expected, tombstone bool) (*esdv1.DeleteStreamResponse, error) {
	return c.deleteFenced(ctx, stream, 0, expected, tombstone)
}

// deleteFenced is DeleteStream with a lease's fencing token (0: none).
func (c *Client) deleteFenced(ctx context.Context, stream string, token uint64, expected Expected, tombstone bool) (*esdv1.DeleteStreamResponse, error) {
	req := &esdv1.DeleteStreamRequest{Stream: stream, Tombstone: tombstone, FencingToken: token}
	switch expected.kind {
	case expectNoStream:
		req.ExpectedRevision = &esdv1.DeleteStreamRequest_NoStream{NoStream: &emptypb.Empty{}}
	case expectStreamExists:
		req.ExpectedRevision = &esdv1.DeleteStreamRequest_StreamExists{StreamExists: &emptypb.Empty{}}
	case expectExact:
		req.ExpectedRevision = &esdv1.DeleteStreamRequest_Exact{Exact: expected.revision}
	}
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.streams.DeleteStream(ctx, req)
	return resp, asError(err)
}

// ListStreams returns every stream ever written whose name starts with
// prefix (deleted ones too, with their flags), ordered by name bytes. It
// fetches pages of pageSize (0: the server's default of 100, at most
// 1000) as the loop goes on; a failure is yielded once, last.
func (c *Client) ListStreams(ctx context.Context, prefix string, pageSize uint32) iter.Seq2[*esdv1.StreamInfo, error] {
	return pages(ctx, c, func(ctx context.Context, token string) ([]*esdv1.StreamInfo, string, error) {
		resp, err := c.streams.ListStreams(ctx, &esdv1.ListStreamsRequest{Prefix: prefix, PageSize: pageSize, PageToken: token})
		return resp.GetStreams(), resp.GetNextPageToken(), err
	})
}

// pages runs a paged list call, page after page while the loop wants
// more, each page retried as an idempotent call.
func pages[T any](ctx context.Context, c *Client, page func(ctx context.Context, token string) ([]T, string, error)) iter.Seq2[T, error] {
	type result struct {
		items []T
		next  string
	}
	return func(yield func(T, error) bool) {
		token := ""
		for {
			r, err := retry(ctx, c, func(ctx context.Context) (result, error) {
				items, next, err := page(ctx, token)
				return result{items, next}, err
			})
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range r.items {
				if !yield(it, nil) {
					return
				}
			}
			if r.next == "" {
				return
			}
			token = r.next
		}
	}
}

// SetStreamMetadata writes a stream's metadata (retention limits and the
// application's JSON), or a category's defaults, if its metadata revision
// is as req expects; it returns the new metadata revision. It is not
// retried: a retry of a write that was done would fail with
// WRONG_EXPECTED_METADATA_REVISION.
func (c *Client) SetStreamMetadata(ctx context.Context, req *esdv1.SetStreamMetadataRequest) (uint64, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.streams.SetStreamMetadata(ctx, req)
	return resp.GetMetadataRevision(), asError(err)
}

// StreamMetadata returns a stream's (or a category's) metadata, its
// revision and the limits in effect.
func (c *Client) StreamMetadata(ctx context.Context, req *esdv1.GetStreamMetadataRequest) (*esdv1.GetStreamMetadataResponse, error) {
	return retry(ctx, c, func(ctx context.Context) (*esdv1.GetStreamMetadataResponse, error) {
		return c.streams.GetStreamMetadata(ctx, req)
	})
}
