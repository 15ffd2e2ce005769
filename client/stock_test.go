package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// The stock counter of the aggregate tests and benchmarks: stock is added
// (Stocked) and taken (Taken) only while enough is left.

type stock struct{ Qty int64 }

type qty struct {
	N int64 `json:"n"`
}

var errInsufficient = errors.New("insufficient stock")

func applyStock(s stock, ev *esdv1.RecordedEvent) (stock, error) {
	var q qty
	if err := json.Unmarshal(ev.GetData(), &q); err != nil {
		return s, err
	}
	switch ev.GetType() {
	case "Stocked":
		s.Qty += q.N
	case "Taken":
		s.Qty -= q.N
	default:
		return s, fmt.Errorf("unknown event type %q", ev.GetType())
	}
	if s.Qty < 0 {
		return s, fmt.Errorf("stock %d at revision %d", s.Qty, ev.GetRevision())
	}
	return s, nil
}

// take is the command: n more taken, if there are n.
func take(n int64) func(stock) ([]*esdv1.ProposedEvent, error) {
	return func(s stock) ([]*esdv1.ProposedEvent, error) {
		if s.Qty < n {
			return nil, errInsufficient
		}
		return []*esdv1.ProposedEvent{client.JSONEvent("Taken", qty{n})}, nil
	}
}

func stocked(n int64) *esdv1.ProposedEvent { return client.JSONEvent("Stocked", qty{n}) }

func newStockAggregate(c *client.Client) *client.Aggregate[stock] {
	return &client.Aggregate[stock]{
		Client: c,
		New:    func() stock { return stock{} },
		Apply:  applyStock,
		// Snapshots: the quantity in decimal.
		SnapshotType: "stock",
		Encode:       func(s stock) ([]byte, error) { return strconv.AppendInt(nil, s.Qty, 10), nil },
		Decode: func(b []byte) (stock, error) {
			n, err := strconv.ParseInt(string(b), 10, 64)
			return stock{n}, err
		},
	}
}
