package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestJSONOutputZeroValues: revision 0 and position 0 are printed, not
// left out as protojson leaves out zero values by default.
func TestJSONOutputZeroValues(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	var resp map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, addr, "append", "z-1", "x", "--type", "T", "-o", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	if resp["firstRevision"] != "0" || resp["lastRevision"] != "0" {
		t.Errorf("append -o json of a stream's first event: revisions %v, %v, want \"0\"\n%v", resp["firstRevision"], resp["lastRevision"], resp)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, addr, "read", "z-1", "-o", "jsonl")), &ev); err != nil {
		t.Fatal(err)
	}
	if ev["revision"] != "0" {
		t.Errorf("read -o jsonl: revision %v, want \"0\"\n%v", ev["revision"], ev)
	}
}

// TestJSONOutputEmbedsJSONData: data that is a JSON object or array is
// printed as JSON, other data (a JSON string too) as base64; append marks
// JSON data application/json unless told otherwise.
func TestJSONOutputEmbedsJSONData(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	mustRun(t, addr, "append", "j-1", `{"name": "chair", "tags": ["a"]}`, "--type", "T")
	mustRun(t, addr, "append", "j-1", `[1, 2]`, "--type", "T")
	mustRun(t, addr, "append", "j-1", `"text"`, "--type", "T")
	mustRun(t, addr, "append", "j-1", `not json`, "--type", "T")
	mustRun(t, addr, "append", "j-1", `{"a":1}`, "--type", "T", "--content-type", "text/plain")

	type event struct {
		Revision    string          `json:"revision"`
		ContentType string          `json:"contentType"`
		Data        json.RawMessage `json:"data"`
	}
	want := []struct{ data, contentType string }{
		{`{"name":"chair","tags":["a"]}`, "application/json"},
		{`[1,2]`, "application/json"},
		{`"InRleHQi"`, "application/json"}, // base64 of "text" with its quotes
		{`"bm90IGpzb24="`, "application/octet-stream"},
		{`{"a":1}`, "text/plain"}, // embedded by its shape, whatever its content type
	}
	check := func(t *testing.T, evs []event) {
		t.Helper()
		if len(evs) != len(want) {
			t.Fatalf("%d events, want %d", len(evs), len(want))
		}
		for i, ev := range evs {
			var data bytes.Buffer
			if err := json.Compact(&data, ev.Data); err != nil {
				t.Fatal(err)
			}
			if data.String() != want[i].data || ev.ContentType != want[i].contentType {
				t.Errorf("event %d: data %s, content type %q; want %s, %q", i, data.String(), ev.ContentType, want[i].data, want[i].contentType)
			}
		}
	}
	t.Run("jsonl", func(t *testing.T) {
		var evs []event
		for _, line := range strings.Split(strings.TrimSpace(mustRun(t, addr, "read", "j-1", "-o", "jsonl")), "\n") {
			var ev event
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("%v: %s", err, line)
			}
			evs = append(evs, ev)
		}
		check(t, evs)
	})
	t.Run("json", func(t *testing.T) {
		var evs []event
		if err := json.Unmarshal([]byte(mustRun(t, addr, "read", "j-1", "-o", "json")), &evs); err != nil {
			t.Fatal(err)
		}
		check(t, evs)
	})
	t.Run("snapshot", func(t *testing.T) {
		mustRun(t, addr, "snapshot", "save", "j-1", "--revision", "1", "--type", "S", "--data", `{"n":2}`)
		var sn struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(mustRun(t, addr, "snapshot", "get", "j-1", "-o", "jsonl")), &sn); err != nil {
			t.Fatal(err)
		}
		if string(sn.Data) != `{"n":2}` {
			t.Errorf("snapshot data %s, want it embedded", sn.Data)
		}
	})
}

func TestEmbedJSONData(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`{"a":"1","data":"eyJ4IjoxfQ=="}`, `{"a":"1","data":{"x":1}}`},
		{`[{"data":"WzFd"},{"data":""}]`, `[{"data":[1]},{"data":""}]`},
		{`{"data":"bm90IGpzb24="}`, `{"data":"bm90IGpzb24="}`},
		{`{"data":"!!"}`, `{"data":"!!"}`},                                   // not base64: left as it is
		{`{"event":{"data":"eyJ4Ijp7fX0="}}`, `{"event":{"data":{"x":{}}}}`}, // nested
		{`{"other":"eyJ4IjoxfQ=="}`, `{"other":"eyJ4IjoxfQ=="}`},             // only data is bytes
		{`{"data":"eyJ4Ijox"}`, `{"data":"eyJ4Ijox"}`},                       // invalid JSON {"x":1
		{`{"z":1,"a":2,"m":3}`, `{"z":1,"a":2,"m":3}`},                       // order kept
	} {
		got, err := embedJSONData([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("embedJSONData(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
