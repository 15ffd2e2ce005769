package writer

import (
	"context"

	eslog "github.com/esdhq/esd/internal/log"
)

// Store is what the writer reads of the log to decide: stream states,
// stored event ids, stream id allocation, and the published position.
type Store interface {
	// State returns a stream's state; ok is false for a stream never stored.
	State(name string) (st eslog.StreamState, ok bool, err error)
	// LookupIDs says where each id is stored, if anywhere.
	LookupIDs(ids [][16]byte) ([]eslog.IDLocation, error)
	// IDEpoch counts applied commits of stream writes: read before
	// LookupIDs, it tells the Committer which commits the lookup saw
	// (eslog.Write.LookupEpoch, a count of this process only).
	IDEpoch() uint64
	// NewStreamID allocates an id for a new stream.
	NewStreamID() uint64
	// WaitPublished blocks until pos is published or ctx ends.
	WaitPublished(ctx context.Context, pos uint64) error
	// CommitTime returns the commit time of the event at pos.
	CommitTime(pos uint64) (int64, error)
}

// Committer is the durable-commit step: it applies a round's writes, makes
// them durable and publishes them to readers and subscribers. This is
// where replication plugs in: today the local log implements it (Local);
// a replicated log that agrees on the writes before applying them takes
// its place without the shards, the validation or the subscriptions
// changing. Every input of a commit is in its writes (see invariant 5 in
// doc.go), so each replica applies the same writes to the same bytes.
type Committer interface {
	// Commit applies writes in order and returns without waiting for
	// durability. Each write's Err says whether it was applied (see
	// eslog.Write); with atomic, one refused write refuses them all. The
	// returned Durable, nil when nothing was applied, is done once every
	// applied write is durable and published. An error means nothing was
	// applied and no later commit will be.
	Commit(writes []*eslog.Write, atomic bool) (Durable, error)
	// Pending returns the newest commit not yet durable, or nil. A shard
	// collects requests while it is pending (group commit).
	Pending() Durable
}

// Durable follows one commit to durability.
type Durable interface {
	// Done is closed when the commit is durable and published, or failed.
	Done() <-chan struct{}
	// Err is the commit's outcome, once Done is closed.
	Err() error
}

// Local is the Committer of a single node: the log's own commit, which
// writes each commit to Pebble's WAL and publishes its positions once the
// WAL is synced.
func Local(l *eslog.Log) Committer { return localCommitter{l} }

type localCommitter struct{ l *eslog.Log }

func (c localCommitter) Commit(writes []*eslog.Write, atomic bool) (Durable, error) {
	t, err := c.l.Commit(writes, atomic)
	if t == nil { // no typed nil in the interface
		return nil, err
	}
	return t, err
}

func (c localCommitter) Pending() Durable {
	if t := c.l.Pending(); t != nil {
		return t
	}
	return nil
}

// wait blocks until d is done or ctx ends. A ctx that ends first leaves
// the commit's outcome unknown to the caller (it may still become
// durable).
func wait(ctx context.Context, d Durable) error {
	select {
	case <-d.Done():
		return d.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}
