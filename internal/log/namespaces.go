package log

import "fmt"

// A Namespace is one feature's part of the aux key space (0x09): every
// aux key is 0x09, the namespace's prefix, then the feature's own key.
// Features reach the aux space only through Log.Aux(ns), whose keys are
// relative to the namespace, so a feature cannot read or write another's
// keys.
//
// Every namespace is in the table below. A namespace's prefix is stored
// in every one of its keys: it never changes and is never reused, and no
// prefix is a prefix of another (TestNamespaceRegistry).
type Namespace uint8

const (
	// NSGroups holds consumer groups' settings, checkpoints and parked
	// events (internal/group).
	NSGroups Namespace = iota + 1
	// NSSnapshots holds snapshots, their policies and load rates
	// (internal/snapshot).
	NSSnapshots
	// NSLeases holds each leased stream's newest lease and fencing-token
	// high-water mark (internal/lease).
	NSLeases
	// NSStreamMeta holds streams' metadata and categories' default
	// limits (internal/streammeta).
	NSStreamMeta
	// NSScavenge holds the record of the running or last scavenge, its
	// cursor included (scavenge.go: written by the log itself, in the
	// batches of the scavenge).
	NSScavenge
)

// namespaces is the registry: index = Namespace, 0 is no namespace.
var namespaces = [...]struct {
	name   string
	prefix string
}{
	NSGroups:     {name: "groups", prefix: "grp/"},
	NSSnapshots:  {name: "snapshots", prefix: "snap/"},
	NSLeases:     {name: "leases", prefix: "lease/"},
	NSStreamMeta: {name: "stream metadata", prefix: "meta/"},
	NSScavenge:   {name: "scavenge", prefix: "scav/"},
}

// Namespaces returns every registered namespace, in table order.
func Namespaces() []Namespace {
	out := make([]Namespace, 0, len(namespaces)-1)
	for i := 1; i < len(namespaces); i++ {
		out = append(out, Namespace(i))
	}
	return out
}

func (ns Namespace) valid() bool { return ns > 0 && int(ns) < len(namespaces) }

// Name is the namespace's name, for messages.
func (ns Namespace) Name() string {
	if !ns.valid() {
		return fmt.Sprintf("namespace(%d)", uint8(ns))
	}
	return namespaces[ns].name
}

func (ns Namespace) String() string { return ns.Name() }

// Prefix is what the namespace's keys start with, after the aux byte 0x09.
func (ns Namespace) Prefix() string {
	if !ns.valid() {
		return ""
	}
	return namespaces[ns].prefix
}
