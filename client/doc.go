// Package client is the Go client of esd.
//
// It wraps the esd.v1 gRPC API (the messages are the generated esdv1
// types) with what every application writes around it otherwise:
// connecting with TLS and a token, typed errors that carry the facts of
// a refusal (a conflict's actual head and the events appended since),
// reads and subscriptions as Go iterators, consumer-group members driven
// by a handler function, and the load-decide-append-retry loop of an
// event-sourced aggregate (Aggregate).
//
// A Client is safe for concurrent use; one per process is enough.
//
//	c, err := client.Dial("127.0.0.1:7400")
//	...
//	defer c.Close()
//	res, err := c.Append(ctx, "order-1", client.NoStream(),
//		client.JSONEvent("OrderPlaced", order))
//	if conflict, ok := client.IsWrongExpectedRevision(err); ok {
//		// conflict.ActualHead, conflict.Events: what others appended
//	}
//
// # Appending
//
// Append writes to one stream, AppendMulti to several atomically. Both
// give events without an id a client-made one first, so that a retry
// after a lost answer never writes twice. Concurrent Append calls share
// one AppendStream call (pipelining: fewer calls, more appends a second,
// the same results); WithPipelining(false) makes each a unary call, and a
// server without AppendStream gets unary calls anyway.
//
// # Reading
//
// Read (one stream) and ReadAll ($all) are iterators of
// (*esdv1.RecordedEvent, error) pairs; ReadOption sets the direction
// (Backward), the start (FromRevision, FromPosition), a count (MaxCount)
// and a filter of $all (WithFilter). A failure comes as the last pair;
// breaking out of the loop ends the call.
//
//	for ev, err := range c.Read(ctx, "order-1") {
//		if err != nil {
//			return err
//		}
//		apply(ev)
//	}
//
// GetStream, DeleteStream and ListStreams describe, delete and list
// streams; Load reads a stream from its latest snapshot.
//
// # Subscribing
//
// Subscribe follows a stream, a category or $all (SubscribeStream,
// SubscribeCategory, SubscribeAll) from the start, a revision or a
// position (AfterRevision, AfterPosition) or the end (FromEnd): history,
// one CaughtUp marker, then live events, until the loop breaks or ctx
// ends. It resumes by itself after the server restarts; SubscribeOnce
// makes it one call instead, whose end by the server (a deletion, a
// shutdown) is the last marker (Ended).
//
// # Consumer groups
//
// CreateGroup, UpdateGroup, DeleteGroup, GetGroup and ListGroups manage
// groups; ListParked and ReplayParked their parked events. RunMember
// joins a group and calls a Handler for each delivery: nil acknowledges,
// an error delivers the event again, Park(err) parks it. Concurrency runs
// several handlers (one stream's events stay in order). When its context
// ends, a member finishes the handlers in flight, sends their acks and
// returns nil, or ErrDrainTimeout when that took longer than
// DrainTimeout. A member joins again after the server restarts; JoinOnce
// makes it one call instead. WaitForCheckpoint waits until a group has handled a
// position, e.g. an append's, to read one's own writes from what the
// group feeds.
//
// # Snapshots
//
// SaveSnapshot, GetSnapshot, ListSnapshots and DeleteSnapshots store and
// find snapshots; SetSnapshotPolicy, GetSnapshotPolicy and
// DeleteSnapshotPolicy say when the server advises one
// (AppendResponse.SnapshotAdvised, Loaded.SnapshotAdvised).
//
// # Everything else
//
// Conn returns the connection for the calls the package does not wrap;
// ServerInfo describes the server.
//
// The package knows nothing of esd's internals: it uses only the
// published API, as a client in any other language would.
package client
