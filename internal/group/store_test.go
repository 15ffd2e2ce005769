package group

import (
	"testing"

	eslog "github.com/esdhq/esd/internal/log"
)

// TestStoreKeysUnchanged: the groups' keys, with their namespace's prefix,
// are the keys stores have had since before namespaces were explicit
// (0x09 then these), so that existing stores keep their groups.
func TestStoreKeysUnchanged(t *testing.T) {
	ns := eslog.NSGroups.Prefix()
	for _, c := range []struct{ got, want string }{
		{ns + string(settingsKey("orders")), "grp/s/orders"},
		{ns + string(checkpointKey("orders")), "grp/c/orders"},
		{ns + string(parkedGroupPrefix("orders")), "grp/p/orders\x00"},
		{ns + string(parkedKey("orders", 0x0102)), "grp/p/orders\x00\x00\x00\x00\x00\x00\x00\x01\x02"},
	} {
		if c.got != c.want {
			t.Errorf("key %q, stores have %q", c.got, c.want)
		}
	}
}
