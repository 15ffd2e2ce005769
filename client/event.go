package client

import (
	"encoding/json"
	"fmt"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/uuid"
)

// NewEvent returns an event of type typ with data as it is.
func NewEvent(typ string, data []byte) *esdv1.ProposedEvent {
	return &esdv1.ProposedEvent{Type: typ, Data: data}
}

// JSONEvent returns an event of type typ whose data is v as JSON, with
// content type application/json. It panics if v does not marshal (a
// programming error: a channel, a function, a cycle).
func JSONEvent(typ string, v any) *esdv1.ProposedEvent {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("client.JSONEvent(%q): %v", typ, err))
	}
	return &esdv1.ProposedEvent{Type: typ, Data: b, ContentType: "application/json"}
}

// withIDs gives every event without an id a fresh UUIDv7 (time-ordered,
// so that the server's id index stays compact), in place. With ids, a
// retried append that the server did write returns its original result
// instead of writing the events twice.
func withIDs(events []*esdv1.ProposedEvent) {
	for _, ev := range events {
		if ev.GetId() == "" {
			ev.Id = newID()
		}
	}
}

func newID() string {
	id, err := uuid.NewV7()
	if err != nil { // the system's random source failed: v4 says so too
		return uuid.NewString()
	}
	return id.String()
}
