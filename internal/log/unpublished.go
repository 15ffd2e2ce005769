package log

// Reads after a storage failure.
//
// Commit applies a batch to Pebble (readable) before its WAL sync; the
// syncer publishes it once synced. When a WAL write or sync fails, the
// batches applied and not yet published stay in Pebble's memtable: they
// are not durable and never acknowledged, but the stream states they
// wrote are what Pebble returns. A reader waiting for such a state to be
// published would fail (that was ReadStream's UNAVAILABLE, after a full
// disk, for every stream whose last append failed), and one that did not
// wait would see events that a restart loses.
//
// So the log keeps its applied, unpublished commits in order (pending).
// When it fails, it freezes: for each stream those commits wrote, the
// state before the first of them, which is the state as of the published
// position. Reads take the frozen state over Pebble's from then on, and
// read events only up to the published position, as always.

// unpublished is the frozen view: stream id -> the state before the
// unpublished commits, or new for a stream they created.
type unpublished struct {
	states map[uint64]frozenState
}

type frozenState struct {
	state StreamState
	new   bool // the stream has no durable state: not found
}

// addPending records t, just applied, as pending; after a failure its
// states go straight into the frozen view.
func (l *Log) addPending(t *Ticket) {
	l.pendMu.Lock()
	defer l.pendMu.Unlock()
	if u := l.frozen.Load(); u != nil {
		u.add(t)
		return
	}
	l.pending = append(l.pending, t)
}

// freezeLocked builds the frozen view from the pending commits. Called
// with pendMu held, once, when the log fails.
func (l *Log) freezeLocked() {
	u := &unpublished{states: make(map[uint64]frozenState)}
	for _, t := range l.pending {
		u.add(t)
	}
	clear(l.pending)
	l.pending = nil
	l.frozen.Store(u)
}

// add records the states t overwrote, unless an earlier unpublished
// commit already did (the earliest one's "before" is the durable one).
// Called with pendMu held.
func (u *unpublished) add(t *Ticket) {
	put := func(w *Write) {
		if _, ok := u.states[w.State.ID]; !ok {
			u.states[w.State.ID] = frozenState{state: w.State, new: w.New}
		}
	}
	for _, w := range t.writes {
		put(w)
	}
	if t.sysBefore != nil {
		put(t.sysBefore)
	}
}

// frozenOf returns the durable state of stream sid when the log has
// failed and an unpublished commit wrote it; ok is false otherwise (the
// state Pebble holds is the durable one).
func (l *Log) frozenOf(sid uint64) (fs frozenState, ok bool) {
	u := l.frozen.Load()
	if u == nil {
		return frozenState{}, false
	}
	l.pendMu.Lock()
	defer l.pendMu.Unlock()
	fs, ok = u.states[sid]
	return fs, ok
}

// unpublishedNew reports whether stream sid was created by a commit that
// the failure left unpublished: its name is in Pebble, but the stream
// does not exist for readers.
func (l *Log) unpublishedNew(sid uint64) bool {
	f, ok := l.frozenOf(sid)
	return ok && f.new
}

// storageFailed fails the log on a WAL write or sync error (walfs.go;
// the error names the WAL file) or a flush error.
func (l *Log) storageFailed(err error) { _ = l.fail(err) }
