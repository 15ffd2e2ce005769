package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Loaded is a stream as Load returns it: the latest usable snapshot (nil
// when there is none) and every event after it up to Head.
type Loaded struct {
	Stream   string
	Snapshot *esdv1.Snapshot
	Events   []*esdv1.RecordedEvent
	// Head is the stream's last revision when the load started: an
	// append after this load expects Exact(Head).
	Head uint64
	// EventsSinceSnapshot counts the events after the snapshot (all of
	// them without one); SnapshotAdvised says the server's policy
	// advises saving a snapshot at Head.
	EventsSinceSnapshot uint64
	SnapshotAdvised     bool
}

// Load reads a stream for rebuilding its state in one call: its latest
// snapshot of schemaVersion (if any), then the events after it. A stream
// never written, deleted or tombstoned is a NOT_FOUND *Error (IsNotFound).
func (c *Client) Load(ctx context.Context, stream string, schemaVersion uint32) (*Loaded, error) {
	return retry(ctx, c, func(ctx context.Context) (*Loaded, error) {
		return c.load(ctx, stream, schemaVersion)
	})
}

func (c *Client) load(ctx context.Context, stream string, schemaVersion uint32) (*Loaded, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call if it stops early
	rs, err := c.snaps.Load(ctx, &esdv1.LoadRequest{Stream: stream, SchemaVersion: schemaVersion})
	if err != nil {
		return nil, err
	}
	l := &Loaded{Stream: stream}
	for {
		msg, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("load %q: the server ended the load without its end message", stream)
		}
		if err != nil {
			return nil, err
		}
		switch m := msg.GetContent().(type) {
		case *esdv1.LoadResponse_Snapshot:
			l.Snapshot = m.Snapshot
		case *esdv1.LoadResponse_Events:
			l.Events = append(l.Events, m.Events.GetEvents()...)
		case *esdv1.LoadResponse_End:
			l.Head = m.End.GetHead()
			l.EventsSinceSnapshot = m.End.GetEventsSinceSnapshot()
			l.SnapshotAdvised = m.End.GetSnapshotAdvised()
			return l, nil
		}
	}
}

// Snapshot is a snapshot to save: the state of Stream after the event at
// Revision, in the application's encoding (Type and SchemaVersion say
// which; Load returns only snapshots of the schema version it asks for).
type Snapshot struct {
	Stream        string
	Revision      uint64
	Type          string
	SchemaVersion uint32
	Data          []byte
}

// SaveSnapshot stores a snapshot. Saving one is idempotent, so it is
// retried like a read.
func (c *Client) SaveSnapshot(ctx context.Context, s Snapshot) (*esdv1.SaveSnapshotResponse, error) {
	req := &esdv1.SaveSnapshotRequest{Stream: s.Stream, Revision: s.Revision, Type: s.Type, SchemaVersion: s.SchemaVersion, Data: s.Data}
	return retry(ctx, c, func(ctx context.Context) (*esdv1.SaveSnapshotResponse, error) {
		return c.snaps.SaveSnapshot(ctx, req)
	})
}
