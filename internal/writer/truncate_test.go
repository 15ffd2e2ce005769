package writer

import (
	"errors"
	"testing"
)

// refuseAll is a lease on every stream.
type refuseAll struct{}

var errLeased = errors.New("leased")

func (refuseAll) Check(string, uint64) error { return errLeased }

// TestTruncate: a truncate raises the first visible revision of a stream
// with visible events, capped at its head; anything else (a stream
// absent, soft-deleted, tombstoned, or truncated as far already) writes
// nothing. No lease fences it, it expects no revision, and appends after
// it expect the same head as before.
func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		setup  string
		before uint64
		want   uint64 // TruncateBefore after; 0 with write false
		write  bool
	}{
		{"absent", 5, 0, false},
		{"existing", 1, 1, true}, // revisions 0 and 1: 0 hidden
		{"existing", 7, 1, true}, // capped at the head
		{"existing", 0, 0, false},
		{"soft-deleted", 5, 0, false},
		{"tombstoned", 5, 0, false},
	} {
		t.Run(tc.setup, func(t *testing.T) {
			f := newFakeLog(t)
			w := newTestWriter(t, f, Config{Shards: 2, Fence: refuseAll{}})
			for _, s := range streamSetups {
				if s.name == tc.setup {
					s.setup(t, newTestWriter(t, f, Config{Shards: 1})) // without the lease
				}
			}
			before, _, _ := f.State("s")
			applied := f.appliedCount()
			said, err := w.Truncate(testCtx(t), "s", tc.before)
			if err != nil {
				t.Fatal(err)
			}
			after, _, _ := f.State("s")
			if wrote := f.appliedCount() > applied; wrote != tc.write || said != tc.write {
				t.Fatalf("wrote %v (Truncate says %v), want %v", wrote, said, tc.write)
			}
			if !tc.write {
				if after != before {
					t.Fatalf("state %+v, was %+v", after, before)
				}
				return
			}
			if after.TruncateBefore != tc.want || after.Head != before.Head || !after.Exists() {
				t.Fatalf("state %+v, want truncate-before %d at head %d, existing", after, tc.want, before.Head)
			}
			// Again: nothing more to do.
			if said, err := w.Truncate(testCtx(t), "s", tc.before); err != nil || said {
				t.Fatalf("second truncate: wrote %v, %v", said, err)
			}
			// The head is what appends expect; the lease still fences them.
			if _, err := w.Append(testCtx(t), appendOf("s", xExact(after.Head), id(7))); !errors.Is(err, errLeased) {
				t.Fatalf("append without the lease: %v", err)
			}
			unleased := newTestWriter(t, f, Config{Shards: 2})
			if _, err := unleased.Append(testCtx(t), appendOf("s", xExact(after.Head), id(7))); err != nil {
				t.Fatalf("append at the head after the truncate: %v", err)
			}
		})
	}
}
