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
// The package knows nothing of esd's internals: it uses only the
// published API, as a client in any other language would.
package client
