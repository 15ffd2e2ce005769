package log

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestApplyNoSyncWaitContract checks, on Pebble itself, the contract of
// applyNoSyncWait that the log relies on (pebbleapply.go), so that a Pebble
// upgrade that changes it fails here:
//
//	(a) right after it returns, the batch is readable;
//	(b) after SyncWait returns nil, the batch survives a crash;
//	(c) batches survive in apply order, each whole or not at all.
//
// Rounds of batches are applied with the WAL's fsyncs held back (gateFS),
// crashed (CrashClone keeping none, half or all of the unsynced data) and
// reopened; then the fsyncs go through, every batch is SyncWaited and the
// store crashed again.
func TestApplyNoSyncWaitContract(t *testing.T) {
	mem := vfs.NewCrashableMem()
	gate := newGateFS(mem)
	db, err := pebble.Open("db", &pebble.Options{FS: gate, FormatMajorVersion: pebble.FormatNewest, Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		gate.Release()
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	}()
	rng := rand.New(rand.NewPCG(5, 6))
	const rounds, perRound = 6, 5
	var batches []*pebble.Batch // batches[i] is batch i+1
	acked := 0                  // batches 1..acked returned nil from SyncWait
	keptUnsynced, lostUnsynced := 0, 0
	for round := range rounds {
		gate.Hold()
		before := len(batches)
		for range perRound {
			n := len(batches) + 1
			b := db.NewBatch()
			for _, part := range []string{"x", "y"} {
				_ = b.Set(contractKey(n, part), contractValue(n, part), nil)
			}
			if n > 1 && n%4 == 0 { // and a range deletion of an earlier batch's y
				_ = b.DeleteRange(contractKey(n-1, "y"), contractKey(n-1, "z"), nil)
			}
			applied := make(chan error, 1)
			go func() { applied <- applyNoSyncWait(db, b) }()
			select {
			case err := <-applied:
				if err != nil {
					t.Fatalf("batch %d: %v", n, err)
				}
			case <-time.After(10 * time.Second):
				gate.Release()
				t.Fatalf("batch %d: applyNoSyncWait waited for the fsync", n)
			}
			batches = append(batches, b)
			// (a): readable at once, though not synced.
			for _, part := range []string{"x", "y"} {
				v, closer, err := db.Get(contractKey(n, part))
				if err != nil {
					t.Fatalf("(a) batch %d not readable after applyNoSyncWait: %v", n, err)
				}
				if !bytes.Equal(v, contractValue(n, part)) {
					t.Fatalf("(a) batch %d: read %q", n, v)
				}
				_ = closer.Close()
			}
		}
		for _, p := range []int{0, 50, 100} {
			m := checkContractClone(t, mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng}), acked, len(batches))
			if p == 0 && m > before {
				// The fsyncs were held back: this is the test's own
				// premise (its crashes can lose something), not the
				// contract.
				t.Fatalf("round %d: with no unsynced data kept, %d batches survived; only %d were applied before the WAL's fsyncs were held", round, m, before)
			}
			if m > acked {
				keptUnsynced++
			} else if m < len(batches) {
				lostUnsynced++
			}
		}
		gate.Release()
		// SyncWait in apply order; in every other round only up to the
		// middle batch: (c) makes the earlier ones durable too.
		upTo := len(batches)
		if round%2 == 1 {
			upTo -= perRound / 2
		}
		for i := acked; i < upTo; i++ {
			if err := batches[i].SyncWait(); err != nil {
				t.Fatalf("batch %d: SyncWait: %v", i+1, err)
			}
		}
		acked = upTo
		if m := checkContractClone(t, mem.CrashClone(vfs.CrashCloneCfg{}), acked, len(batches)); m < acked {
			t.Fatalf("(b) round %d: %d batches survived, %d were synced", round, m, acked)
		}
	}
	for i := acked; i < len(batches); i++ {
		if err := batches[i].SyncWait(); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range batches {
		_ = b.Close()
	}
	if m := checkContractClone(t, mem.CrashClone(vfs.CrashCloneCfg{}), len(batches), len(batches)); m != len(batches) {
		t.Fatalf("(b) %d of %d synced batches survived", m, len(batches))
	}
	t.Logf("crashes that kept unsynced batches: %d; that lost some: %d", keptUnsynced, lostUnsynced)
	if keptUnsynced == 0 || lostUnsynced == 0 {
		t.Errorf("the crashes did not exercise both outcomes (kept %d, lost %d)", keptUnsynced, lostUnsynced)
	}
}

func contractKey(n int, part string) []byte { return fmt.Appendf(nil, "b/%06d/%s", n, part) }

// contractValue is a batch's value of part; every fifth batch's x is
// larger than a WAL block, so that its record spans several.
func contractValue(n int, part string) []byte {
	v := fmt.Appendf(nil, "batch %d %s", n, part)
	if n%5 == 0 && part == "x" {
		v = append(v, bytes.Repeat([]byte{byte(n)}, 40<<10)...)
	}
	return v
}

// checkContractClone opens the crashed store fs and returns m, the number
// of batches that survived. It fails the test unless the survivors are
// batches 1..m, each whole ((c)), and m >= acked ((b)).
func checkContractClone(t *testing.T, fs vfs.FS, acked, applied int) int {
	t.Helper()
	db, err := pebble.Open("db", &pebble.Options{FS: fs, FormatMajorVersion: pebble.FormatNewest, Logger: quietPebble{}})
	if err != nil {
		t.Fatalf("open crashed store: %v", err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	}()
	get := func(key []byte) ([]byte, bool) {
		v, closer, err := db.Get(key)
		if errors.Is(err, pebble.ErrNotFound) {
			return nil, false
		}
		if err != nil {
			t.Fatal(err)
		}
		defer closer.Close()
		return append([]byte(nil), v...), true
	}
	// Batch n survived if its x did; its y too unless batch n+1 (a range
	// deletion of it) survived.
	m := 0
	for n := 1; n <= applied; n++ {
		x, ok := get(contractKey(n, "x"))
		if !ok {
			break
		}
		if !bytes.Equal(x, contractValue(n, "x")) {
			t.Fatalf("batch %d: x is %q", n, x)
		}
		m = n
	}
	for n := 1; n <= applied; n++ {
		_, xok := get(contractKey(n, "x"))
		y, yok := get(contractKey(n, "y"))
		if n > m {
			if xok || yok {
				t.Fatalf("(c) batch %d survived a crash that lost batch %d (acked %d, applied %d)", n, m+1, acked, applied)
			}
			continue
		}
		deletedByNext := (n+1)%4 == 0 && n+1 <= m
		switch {
		case deletedByNext && yok:
			t.Fatalf("(c) batch %d survived without its range deletion", n+1)
		case !deletedByNext && !yok:
			t.Fatalf("(c) batch %d survived in part: x without y", n)
		case yok && !bytes.Equal(y, contractValue(n, "y")):
			t.Fatalf("batch %d: y is %q", n, y)
		}
	}
	if m < acked {
		t.Fatalf("(b) %d batches synced, %d survived", acked, m)
	}
	return m
}

// quietPebble drops Pebble's messages but its fatal ones.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)              {}
func (quietPebble) Errorf(string, ...any)             {}
func (quietPebble) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
