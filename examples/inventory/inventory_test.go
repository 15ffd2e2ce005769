package main

import (
	"context"
	"errors"
	"testing"

	"github.com/esdhq/esd/client"
	"github.com/esdhq/esd/internal/testutil/esdtest"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestRun plays a small scenario against an in-process esd: Run checks
// the invariants itself (stock never below zero at any revision, final
// stock = initial - confirmed = the view's), and the report shows each
// mechanism at work: stock conflicts retried, snapshots saved and loaded
// from, every confirmation after the view had the add.
func TestRun(t *testing.T) {
	srv := esdtest.Start(t)
	c, err := client.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() //nolint:errcheck // test connection
	cfg := Config{Products: 3, Stock: 120, Shoppers: 16, Adds: 30, PriceChanges: 20, SnapshotEvery: 20, RunID: "t"}
	rep, err := Run(context.Background(), c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Confirmed == 0 || rep.SoldOut == 0 {
		t.Errorf("%d confirmed, %d sold out: the scenario sells out every product", rep.Confirmed, rep.SoldOut)
	}
	if rep.ConflictsRetried == 0 {
		t.Errorf("no stock conflict retried: 16 shoppers on 3 products collide")
	}
	if rep.Snapshots == 0 || rep.SnapshotErrors != 0 {
		t.Errorf("%d snapshots saved, %d failed", rep.Snapshots, rep.SnapshotErrors)
	}
	if rep.Waits != rep.Confirmed || rep.WaitsNotReached != 0 || rep.StaleConfirms != 0 {
		t.Errorf("%d confirmed, %d waits (%d not reached, %d stale)", rep.Confirmed, rep.Waits, rep.WaitsNotReached, rep.StaleConfirms)
	}
	if got := rep.Adds; got != int64(cfg.Shoppers*cfg.Adds) {
		t.Errorf("%d adds, want %d", got, cfg.Shoppers*cfg.Adds)
	}
	for _, f := range rep.Final {
		if f.Stock != f.View || f.Stock >= cfg.Stock || !f.LoadedFromSnapshot || f.Snapshots == 0 {
			t.Errorf("%+v: want some sold, the view agreeing, loaded from a snapshot", f)
		}
	}
	t.Logf("%+v", *rep)
}

func recorded(typ string, data string) *esdv1.RecordedEvent {
	return &esdv1.RecordedEvent{Stream: "product-x.1", Type: typ, Data: []byte(data)}
}

// TestAddToCart: the command's decisions, and the conflict policy: only
// a price change goes back to the shopper.
func TestAddToCart(t *testing.T) {
	p := Product{Name: "chair", Price: 1000, Stock: 2}
	if evs, err := addToCart("c", 2, 1000)(p); err != nil || len(evs) != 1 || evs[0].GetType() != "AddedToCart" {
		t.Errorf("add 2 of 2: %v, %v", evs, err)
	}
	if _, err := addToCart("c", 3, 1000)(p); !errors.Is(err, errSoldOut) {
		t.Errorf("add 3 of 2: %v, want sold out", err)
	}
	var moved *priceChangedError
	if _, err := addToCart("c", 1, 900)(p); !errors.As(err, &moved) || moved.Price != 1000 {
		t.Errorf("add at an old price: %v, want the price changed to 1000", err)
	}
	if _, err := addToCart("c", 1, 1000)(Product{}); !errors.Is(err, errUnknown) {
		t.Errorf("add of an unlisted product: %v", err)
	}
	stockOnly := &client.Conflict{Events: []*esdv1.RecordedEvent{recorded("AddedToCart", `{"qty":1}`)}}
	priced := &client.Conflict{Events: []*esdv1.RecordedEvent{
		recorded("PriceChanged", `{"price":1100}`), recorded("AddedToCart", `{"qty":1}`), recorded("PriceChanged", `{"price":1200}`)}}
	if priceMoved(stockOnly) || !priceMoved(priced) || lastPrice(priced) != 1200 {
		t.Errorf("priceMoved(stock only) = %v, priceMoved(priced) = %v, lastPrice = %d", priceMoved(stockOnly), priceMoved(priced), lastPrice(priced))
	}
	if _, err := Apply(Product{Name: "chair", Stock: 1}, recorded("AddedToCart", `{"qty":2}`)); err == nil {
		t.Errorf("Apply took the stock below zero")
	}
}
