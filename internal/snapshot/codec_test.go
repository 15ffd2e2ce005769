package snapshot

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIndexRoundTrip(t *testing.T) {
	for _, es := range [][]entry{
		{},
		{{rev: 0, schema: 0, created: 1, size: 0, typ: "T"}},
		{{rev: 1, schema: 2, created: -5, size: 1 << 20, typ: "Order"}, {rev: 1, schema: 3, typ: ""}, {rev: 1 << 60, schema: 1<<32 - 1, created: 1 << 62, size: 7, typ: "ü"}},
	} {
		got, err := decodeIndex(encodeIndex(es))
		if err != nil {
			t.Fatalf("decode %v: %v", es, err)
		}
		if !cmp.Equal(es, got, cmp.AllowUnexported(entry{})) {
			t.Fatalf("round trip of %v gave %v", es, got)
		}
	}
	good := encodeIndex([]entry{{rev: 1, typ: "A"}, {rev: 2, typ: "B"}})
	unsorted := encodeIndex([]entry{{rev: 2, typ: "A"}, {rev: 1, typ: "B"}})
	for name, v := range map[string][]byte{
		"empty":       nil,
		"version":     append([]byte{9}, good[1:]...),
		"truncated":   good[:len(good)-1],
		"trailing":    append(append([]byte(nil), good...), 0),
		"unsorted":    unsorted,
		"huge count":  {indexVersion, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"type length": append(append([]byte(nil), good[:len(good)-2]...), 0x7f, 'B'),
	} {
		if _, err := decodeIndex(v); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decode gave %v, want errCorrupt", name, err)
		}
	}
}

func TestDataRoundTrip(t *testing.T) {
	for _, d := range [][]byte{nil, {}, []byte("state"), bytes.Repeat([]byte{0xab}, 1<<16)} {
		got, err := decodeData(encodeData(d))
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("round trip of %d bytes: %d bytes, %v", len(d), len(got), err)
		}
	}
	v := encodeData([]byte("state"))
	for i := range v {
		bad := append([]byte(nil), v...)
		bad[i] ^= 0x10
		if _, err := decodeData(bad); !errors.Is(err, errCorrupt) {
			t.Errorf("flipped byte %d: %v, want errCorrupt", i, err)
		}
	}
	if _, err := decodeData(v[:4]); !errors.Is(err, errCorrupt) {
		t.Errorf("short record: %v", err)
	}
}

func TestPolicyRoundTrip(t *testing.T) {
	for _, p := range []Policy{{}, {Every: 100}, {ReplayThreshold: 5}, {Every: 1 << 63, ReplayThreshold: 1<<64 - 1}} {
		got, err := decodePolicy(encodePolicy(p))
		if err != nil || got != p {
			t.Fatalf("round trip of %+v: %+v, %v", p, got, err)
		}
	}
	if _, err := decodePolicy([]byte{policyVersion, 1}); !errors.Is(err, errCorrupt) {
		t.Fatalf("short policy: %v", err)
	}
}

// TestDataKeysOrder: a scan of a stream's data keys gives its snapshots
// in revision order, then schema version; no stream's keys fall among
// another's, also when one name is a prefix of the other.
func TestDataKeysOrder(t *testing.T) {
	keys := [][]byte{
		dataKey("a", 0, 0), dataKey("a", 0, 1), dataKey("a", 1, 0), dataKey("a", 255, 0), dataKey("a", 256, 0), dataKey("a", 1<<40, 0),
	}
	for i := 1; i < len(keys); i++ {
		if bytes.Compare(keys[i-1], keys[i]) >= 0 {
			t.Fatalf("key %d %x not before key %d %x", i-1, keys[i-1], i, keys[i])
		}
	}
	for _, other := range []string{"a-", "ab", "a\u00ff", "a0"} {
		k := dataKey(other, 0, 0)
		if bytes.HasPrefix(k, dataStreamPrefix("a")) {
			t.Fatalf("key of %q %x is under a's prefix", other, k)
		}
	}
	if !bytes.HasPrefix(dataKey("a", 7, 3), dataStreamPrefix("a")) {
		t.Fatal("a key is not under its stream's prefix")
	}
}
