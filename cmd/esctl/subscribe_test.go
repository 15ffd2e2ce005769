package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// signalWriter collects esctl's output and closes seen once it contains
// want, so a test acts when esctl got somewhere instead of sleeping.
type signalWriter struct {
	mu   sync.Mutex // guards buf and closed
	buf  bytes.Buffer
	want string
	seen chan struct{}

	closed bool
}

func newSignalWriter(want string) *signalWriter {
	return &signalWriter{want: want, seen: make(chan struct{})}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if !w.closed && w.want != "" && strings.Contains(w.buf.String(), w.want) {
		w.closed = true
		close(w.seen)
	}
	return n, err
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// background is an esctl run in its own goroutine.
type background struct {
	stdout, stderr *signalWriter
	code           chan int
}

// startCLI runs esctl against addr under ctx in the background; stdout
// and stderr signal when they contain outWant and errWant.
func startCLI(ctx context.Context, addr, outWant, errWant string, args ...string) *background {
	b := &background{stdout: newSignalWriter(outWant), stderr: newSignalWriter(errWant), code: make(chan int, 1)}
	args = append([]string{"--addr", addr}, args...)
	go func() { b.code <- run(ctx, args, strings.NewReader(""), b.stdout, b.stderr) }()
	return b
}

// waitFor fails the test if ch is not closed in good time: a safety net
// against a hang, not a synchronisation.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// exit waits for the run to end and returns its exit code.
func (b *background) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-b.code:
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("esctl did not exit; stdout:\n%s\nstderr:\n%s", b.stdout, b.stderr)
		return -1
	}
}

func TestSubscribeFormats(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr) // cart-1: positions 1-7, user-1: 8
	want := srv.events(t, "cart-1")

	t.Run("table", func(t *testing.T) {
		out, stderr, code := runCLI(t, addr, nil, "subscribe", "cart-1", "--until-caught-up")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 1+len(want) {
			t.Fatalf("%d lines, want header and %d rows:\n%s", len(lines), len(want), out)
		}
		if got := strings.Fields(lines[0]); !cmp.Equal(got, []string{"POSITION", "STREAM", "REVISION", "TYPE", "ID", "DATA"}) {
			t.Errorf("header %q", got)
		}
		if got, wantRow := strings.Fields(lines[1]), []string{"1", "cart-1", "0", "ItemAdded", want[0].GetId(), `{"item":0}`}; !cmp.Equal(got, wantRow) {
			t.Errorf("first row %q, want %q", got, wantRow)
		}
		if !strings.HasSuffix(lines[7], "<3 bytes>") {
			t.Errorf("binary data not shown as a size: %q", lines[7])
		}
		// The columns line up: each row's ID starts where the header's does.
		col := strings.Index(lines[0], "ID")
		for i, l := range lines[1:] {
			if strings.Index(l, want[i].GetId()) != col {
				t.Errorf("ID not in its column:\n%s\n%s", lines[0], l)
			}
		}
		if stderr != "-- caught up at position 8\n" {
			t.Errorf("stderr %q", stderr)
		}
	})
	t.Run("jsonl", func(t *testing.T) {
		out, stderr, code := runCLI(t, addr, nil, "subscribe", "cart-1", "--until-caught-up", "-o", "jsonl")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if diff := cmp.Diff(want, jsonLines(t, out, newEvent), protocmp.Transform()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
		if stderr != "-- caught up at position 8\n" {
			t.Errorf("without --markers the markers go to stderr; stderr %q", stderr)
		}
	})
	t.Run("json is one object a line", func(t *testing.T) {
		out := mustRun(t, addr, "subscribe", "cart-1", "--until-caught-up", "-o", "json")
		if diff := cmp.Diff(want, jsonLines(t, out, newEvent), protocmp.Transform()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
	t.Run("jsonl markers", func(t *testing.T) {
		out, stderr, code := runCLI(t, addr, nil, "subscribe", "--all", "--type-prefix", "Item", "--until-caught-up", "-o", "jsonl", "--markers")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 6+2 {
			t.Fatalf("%d lines, want 6 events, a checkpoint and caught up:\n%s", len(lines), out)
		}
		if got := lines[6:]; !cmp.Equal(got, []string{`{"checkpoint":{"position":"8"}}`, `{"caughtUp":{"position":"8"}}`}) {
			t.Errorf("markers %q", got)
		}
		// Each marker line is the SubscribeResponse in protojson.
		msgs := jsonLines(t, strings.Join(lines[6:], "\n"), func() *esdv1.SubscribeResponse { return &esdv1.SubscribeResponse{} })
		if msgs[1].GetCaughtUp().GetPosition() != 8 {
			t.Errorf("caught up %v", msgs[1])
		}
		if stderr != "" {
			t.Errorf("stderr %q", stderr)
		}
	})
	t.Run("empty table is the header", func(t *testing.T) {
		out := mustRun(t, addr, "subscribe", "nobody-1", "--until-caught-up")
		if got := strings.Fields(out); !cmp.Equal(got, []string{"POSITION", "STREAM", "REVISION", "TYPE", "ID", "DATA"}) {
			t.Errorf("output %q", out)
		}
	})
}

// TestSubscribeRequests: each way of naming a target and a start is the
// SubscribeRequest esctl sends, and the subscription delivers what it
// says. The start is left unset for --from start, which the API reads
// as the start.
func TestSubscribeRequests(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr)
	empty := &emptypb.Empty{}
	tests := []struct {
		name    string
		args    []string
		want    *esdv1.SubscribeRequest
		wantPos []uint64
	}{
		{
			"stream from start", []string{"cart-1"},
			&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Stream{Stream: "cart-1"}},
			[]uint64{1, 2, 3, 4, 5, 6, 7},
		},
		{
			"stream after revision", []string{"cart-1", "--from", "3"},
			&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Stream{Stream: "cart-1"}, From: &esdv1.SubscribeRequest_AfterRevision{AfterRevision: 3}},
			[]uint64{5, 6, 7},
		},
		{
			"category after position", []string{"--category", "cart", "--from", "5"},
			&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Category{Category: "cart"}, From: &esdv1.SubscribeRequest_AfterPosition{AfterPosition: 5}},
			[]uint64{6, 7},
		},
		{
			"all from end", []string{"--all", "--from", "end"},
			&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{All: empty}, From: &esdv1.SubscribeRequest_End{End: empty}},
			nil,
		},
		{
			"all filtered", []string{"--all", "--stream-prefix", "user-", "--stream-prefix", "cart-", "--type-prefix", "User", "--from", "start"},
			&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{All: empty},
				Filter: &esdv1.Filter{StreamPrefixes: []string{"user-", "cart-"}, EventTypePrefixes: []string{"User"}}},
			[]uint64{8},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { // not parallel: each takes the server's requests since the last
			before := len(srv.requests(t, "Subscribe"))
			args := append([]string{"subscribe", "--until-caught-up", "-o", "jsonl"}, tc.args...)
			var got []uint64
			for _, ev := range jsonLines(t, mustRun(t, addr, args...), newEvent) {
				got = append(got, ev.GetPosition())
			}
			if !cmp.Equal(got, tc.wantPos) {
				t.Errorf("positions %v, want %v", got, tc.wantPos)
			}
			reqs := srv.requests(t, "Subscribe")[before:]
			if diff := cmp.Diff([]proto.Message{tc.want}, reqs, protocmp.Transform()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSubscribeLimit(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	fillReadStreams(t, addr)
	out, stderr, code := runCLI(t, addr, nil, "subscribe", "--all", "--limit", "4", "-o", "jsonl")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if evs := jsonLines(t, out, newEvent); len(evs) != 4 || evs[3].GetPosition() != 4 {
		t.Errorf("want positions 1 to 4:\n%s", out)
	}
	if stderr != "" {
		t.Errorf("stopped before caught up, yet stderr %q", stderr)
	}
}

// TestSubscribeLive appends while subscribed: the new event comes after
// caught up, and --limit ends the subscription on it.
func TestSubscribeLive(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr) // 7 events in cart-1
	b := startCLI(t.Context(), addr, "", "-- caught up", "subscribe", "cart-1", "--limit", "8")
	waitFor(t, b.stderr.seen, "caught up")
	mustRun(t, addr, "append", "cart-1", "live!", "--type", "ItemRemoved")
	if code := b.exit(t); code != exitOK {
		t.Fatalf("exit %d: %s", code, b.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(b.stdout.String(), "\n"), "\n")
	if len(lines) != 1+8 {
		t.Fatalf("%d lines, want header and 8 rows:\n%s", len(lines), b.stdout)
	}
	live := srv.events(t, "cart-1")[7]
	if got := strings.Fields(lines[8]); !cmp.Equal(got, []string{"9", "cart-1", "7", "ItemRemoved", live.GetId(), "live!"}) {
		t.Errorf("live row %q", got)
	}
}

func TestSubscribeEnded(t *testing.T) {
	t.Parallel()
	t.Run("stream deleted", func(t *testing.T) {
		t.Parallel()
		addr := startESD(t).addr
		fillReadStreams(t, addr)
		b := startCLI(t.Context(), addr, "", "-- caught up", "subscribe", "cart-1")
		waitFor(t, b.stderr.seen, "caught up")
		mustRun(t, addr, "delete", "cart-1")
		if code := b.exit(t); code != exitOK {
			t.Fatalf("exit %d: %s", code, b.stderr)
		}
		if got := b.stderr.String(); got != "-- caught up at position 8\n-- ended: STREAM_DELETED\n" {
			t.Errorf("stderr %q", got)
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		t.Parallel()
		// A stopping server ends a subscription with ended, then the
		// status UNAVAILABLE/SHUTTING_DOWN, which esctl does not wait for.
		addr := startFake(t, &fakeServer{})
		out, stderr, code := runCLI(t, addr, nil, "subscribe", "user-1", "-o", "jsonl", "--markers")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 3 || lines[2] != `{"ended":{"reason":"SHUTTING_DOWN"}}` {
			t.Errorf("want an event, caught up and ended:\n%s", out)
		}
		_, stderr, code = runCLI(t, addr, nil, "subscribe", "user-1")
		if code != exitOK || !strings.HasSuffix(stderr, "-- ended: SHUTTING_DOWN\n") {
			t.Errorf("table: exit %d, stderr %q", code, stderr)
		}
	})
}

// TestSubscribeInterrupt cancels the context as Ctrl-C does: exit 0, with
// everything received printed.
func TestSubscribeInterrupt(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	fillReadStreams(t, addr)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	b := startCLI(ctx, addr, "", "-- caught up", "subscribe", "--category", "cart", "-o", "jsonl")
	waitFor(t, b.stderr.seen, "caught up")
	cancel()
	if code := b.exit(t); code != exitOK {
		t.Fatalf("exit %d: %s", code, b.stderr)
	}
	if evs := jsonLines(t, b.stdout.String(), newEvent); len(evs) != 7 {
		t.Errorf("%d events, want 7", len(evs))
	}
}

func TestSubscribeExitCodes(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	mustRun(t, addr, "delete", "gone-1", "--tombstone")
	tests := []struct {
		name       string
		addr       string
		args       []string
		want       int
		wantStderr string
	}{
		{"no target", addr, []string{"subscribe"}, exitUsage, "give exactly one of STREAM, --category or --all"},
		{"two targets", addr, []string{"subscribe", "s-1", "--all"}, exitUsage, "give exactly one of"},
		{"category and all", addr, []string{"subscribe", "--category", "s", "--all"}, exitUsage, "give exactly one of"},
		{"empty category is a target", addr, []string{"subscribe", "--category", "", "--all"}, exitUsage, "give exactly one of"},
		{"stream prefix without all", addr, []string{"subscribe", "s-1", "--stream-prefix", "x"}, exitUsage, "--all only"},
		{"type prefix with category", addr, []string{"subscribe", "--category", "s", "--type-prefix", "x"}, exitUsage, "--all only"},
		{"bad from", addr, []string{"subscribe", "s-1", "--from", "yesterday"}, exitUsage, "want start, end or a number"},
		{"negative limit", addr, []string{"subscribe", "s-1", "--limit", "-1"}, exitUsage, "invalid argument"},
		{"markers in a table", addr, []string{"subscribe", "--all", "--markers"}, exitUsage, "--markers needs -o json or jsonl"},
		{"too many arguments", addr, []string{"subscribe", "a", "b"}, exitUsage, "accepts at most 1 arg"},
		{"tombstoned", addr, []string{"subscribe", "gone-1"}, exitError, "(reason: STREAM_TOMBSTONED)"},
		{"server refuses", addr, []string{"subscribe", "--category", "cart-1"}, exitError, "(reason: INVALID_ARGUMENT)"},
		{"unreachable", closedAddr(t), []string{"subscribe", "--all"}, exitUnavailable, "cannot reach esd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, stderr, code := runCLI(t, tc.addr, nil, tc.args...)
			if code != tc.want {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.want, stderr)
			}
			if !strings.HasPrefix(stderr, "esctl: ") || !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
			}
			if out != "" {
				t.Errorf("an error alone prints nothing on stdout, got:\n%s", out)
			}
		})
	}
}

func TestLiveTable(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	tab := newLiveTable(&buf, []liveColumn{{"A", 3}, {"B", 0}, {"C", 0}})
	for _, row := range [][]string{{"1", "x", "last"}, {"12345", "yy", ""}, {"1", "x", "z"}} {
		if err := tab.row(row); err != nil {
			t.Fatal(err)
		}
	}
	want := "A    B  C\n" +
		"1    x  last\n" +
		"12345  yy  \n" + // wider than the columns: they grow from here on
		"1      x   z\n"
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
