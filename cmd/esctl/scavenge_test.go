package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestScavengeCommands: status before any scavenge is an error (exit 1,
// the server's NOT_FOUND); start --wait follows a scavenge of deleted
// streams to its end, printing progress lines (not a bar: stderr is no
// terminal here) and the final record; status and stop then show it
// done, with the events removed.
func TestScavengeCommands(t *testing.T) {
	e := startESD(t)
	for i := range 5 {
		s := fmt.Sprintf("old-%d", i)
		mustRun(t, e.addr, "append", s, "x", "--type", "T")
		mustRun(t, e.addr, "append", s, "y", "--type", "T")
		mustRun(t, e.addr, "delete", s)
	}
	mustRun(t, e.addr, "append", "kept-1", "z", "--type", "T")
	if _, stderr, code := runCLI(t, e.addr, nil, "scavenge", "status"); code != exitError || !strings.Contains(stderr, "SCAVENGE_NOT_FOUND") {
		t.Fatalf("status before any: exit %d, %s", code, stderr)
	}
	prev := scavengePoll
	scavengePoll = 10 * time.Millisecond
	t.Cleanup(func() { scavengePoll = prev })
	out, stderr, code := runCLI(t, e.addr, nil, "scavenge", "start", "--wait", "--rate", "100000")
	if code != exitOK {
		t.Fatalf("start --wait: exit %d, %s", code, stderr)
	}
	if !strings.Contains(stderr, "scavenge ") || !strings.Contains(stderr, "100.0%  5/5 streams  10 events removed") || strings.Contains(stderr, "\r") {
		t.Fatalf("progress lines:\n%s", stderr)
	}
	if !strings.Contains(out, "STATE") || !strings.Contains(out, "done") {
		t.Fatalf("start --wait printed:\n%s", out)
	}
	for _, cmd := range []string{"status", "stop"} {
		out := mustRun(t, e.addr, "-o", "json", "scavenge", cmd)
		var got struct {
			State         string `json:"state"`
			EventsRemoved string `json:"eventsRemoved"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		if got.State != "SCAVENGE_STATE_DONE" || got.EventsRemoved != "10" {
			t.Fatalf("%s: %+v\n%s", cmd, got, out)
		}
	}
	if evs := e.events(t, "kept-1"); len(evs) != 1 {
		t.Fatalf("kept-1 has %d events after the scavenge", len(evs))
	}
}

// TestScavengeProgressBar: on a terminal the progress is a bar of 30
// cells, filled in proportion.
func TestScavengeProgressBar(t *testing.T) {
	got := scavengeProgress(&esdv1.Scavenge{Id: "x", Progress: 0.5, StreamsDone: 1, StreamsTotal: 2, EventsRemoved: 7,
		BytesReclaimed: 2048, State: esdv1.ScavengeState_SCAVENGE_STATE_RUNNING}, true)
	want := "[" + strings.Repeat("#", 15) + strings.Repeat(".", 15) + "]  50.0%  1/2 streams  7 events removed  2.0 KiB reclaimed  running"
	if got != want {
		t.Fatalf("bar %q, want %q", got, want)
	}
}
