package main

import (
	"path/filepath"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
)

func ev(stream string, rev uint64, typ, data string) *esdv1.RecordedEvent {
	return &esdv1.RecordedEvent{Stream: stream, Revision: rev, Type: typ, Data: []byte(data), Id: "id"}
}

// TestApplyIsIdempotent: a redelivered event changes nothing, whatever the
// order redeliveries come in after later events.
func TestApplyIsIdempotent(t *testing.T) {
	evs := []*esdv1.RecordedEvent{
		ev("product-1", 0, "ProductCreated", `{"name":"chair"}`),
		ev("product-1", 1, "PriceSet", `{"price":120}`),
		ev("product-1", 0, "ProductCreated", `{"name":"chair"}`), // redelivered
		ev("product-2", 0, "ProductCreated", `{"name":"table"}`),
		ev("product-1", 2, "ProductRenamed", `{"name":"armchair"}`),
		ev("product-1", 1, "PriceSet", `{"price":120}`), // redelivered after a later one
	}
	changed := []bool{true, true, false, true, true, false}
	c := Catalogue{}
	for i, e := range evs {
		got, err := c.Apply(e)
		if err != nil {
			t.Fatal(err)
		}
		if got != changed[i] {
			t.Errorf("event %d: changed %t, want %t", i, got, changed[i])
		}
	}
	want := Catalogue{
		"product-1": {Name: "armchair", Price: 120, Revision: 2},
		"product-2": {Name: "table", Revision: 0},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatal(diff)
	}
	path := filepath.Join(t.TempDir(), "products.json")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, back); diff != "" {
		t.Fatal(diff)
	}
}

func TestApplyRejectsBadData(t *testing.T) {
	if _, err := (Catalogue{}).Apply(ev("product-1", 0, "PriceSet", `not json`)); err == nil {
		t.Fatal("bad data applied")
	}
}
