package log

import (
	"encoding/binary"
	"fmt"
)

// StreamState is a stream's durable state, the value of its kStream key.
type StreamState struct {
	ID   uint64
	Name string
	// Written: an event was ever appended, so Head means something.
	Written bool
	// Head is the revision of the last event ever appended, deleted or not.
	Head uint64
	// TruncateBefore is the first visible revision: a soft delete sets it
	// to Head+1, hiding every event so far.
	TruncateBefore uint64
	// LimitBefore is the first revision the stream's retention limits
	// leave visible (retention.go), set in the states readers get
	// (StreamInfo, ListStreams) and never stored; 0: they hide nothing.
	LimitBefore uint64
	// Tombstoned: deleted forever.
	Tombstoned bool
	// LastPosition is the position of the stream's last change (its head
	// event, or its deletion's event): readers wait until it is published.
	LastPosition     uint64
	Created, Updated int64 // unix nanoseconds; 0 for a stream never written
}

// Exists reports whether the stream has visible events.
func (s *StreamState) Exists() bool {
	return s.Written && !s.Tombstoned && s.Head+1 > s.TruncateBefore
}

// Deleted reports whether the stream is soft-deleted (and not appended since).
func (s *StreamState) Deleted() bool {
	return s.Written && !s.Tombstoned && !s.Exists()
}

// NextRevision is the revision the next appended event gets.
func (s *StreamState) NextRevision() uint64 {
	if s.Written {
		return s.Head + 1
	}
	return 0
}

// FirstVisible is the first revision a reader sees: past the soft
// delete's truncate and the retention limits' (LimitBefore). Head+1 or
// more: none.
func (s *StreamState) FirstVisible() uint64 { return max(s.TruncateBefore, s.LimitBefore) }

// EventCount is the number of visible events. Exists and Deleted are
// about deletions alone: a stream whose events the retention limits all
// hide exists, with no visible events.
func (s *StreamState) EventCount() uint64 {
	if !s.Exists() || s.Head+1 <= s.FirstVisible() {
		return 0
	}
	return s.Head + 1 - s.FirstVisible()
}

const (
	stateVersion byte = 1

	flagWritten    byte = 1 << 0
	flagTombstoned byte = 1 << 1
)

// appendState encodes s:
// version(1) flags(1) head(8) truncate-before(8) last-position(8)
// created(8) updated(8) name(rest). The id is the key.
func appendState(dst []byte, s *StreamState) []byte {
	var flags byte
	if s.Written {
		flags |= flagWritten
	}
	if s.Tombstoned {
		flags |= flagTombstoned
	}
	dst = append(dst, stateVersion, flags)
	dst = binary.BigEndian.AppendUint64(dst, s.Head)
	dst = binary.BigEndian.AppendUint64(dst, s.TruncateBefore)
	dst = binary.BigEndian.AppendUint64(dst, s.LastPosition)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.Created))
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.Updated))
	return append(dst, s.Name...)
}

func decodeState(sid uint64, v []byte) (StreamState, error) {
	if len(v) < 2 || v[0] != stateVersion {
		return StreamState{}, fmt.Errorf("%w: stream %d state", ErrCorrupt, sid)
	}
	flags := v[1]
	d := decoder{b: v[2:]}
	s := StreamState{
		ID:             sid,
		Written:        flags&flagWritten != 0,
		Tombstoned:     flags&flagTombstoned != 0,
		Head:           d.u64(),
		TruncateBefore: d.u64(),
		LastPosition:   d.u64(),
		Created:        int64(d.u64()),
		Updated:        int64(d.u64()),
	}
	if d.err != nil {
		return StreamState{}, fmt.Errorf("stream %d state: %w", sid, d.err)
	}
	if flags&^(flagWritten|flagTombstoned) != 0 || len(d.b) == 0 {
		return StreamState{}, fmt.Errorf("%w: stream %d state flags %x, name of %d bytes", ErrCorrupt, sid, flags, len(d.b))
	}
	s.Name = string(d.b)
	return s, nil
}

// stats are the store-wide counters kept under kMeta "stats".
type stats struct {
	streams uint64 // streams with visible events
	events  uint64 // visible events
}

func appendStats(dst []byte, s stats) []byte {
	dst = binary.BigEndian.AppendUint64(dst, s.streams)
	return binary.BigEndian.AppendUint64(dst, s.events)
}

func decodeStats(v []byte) (stats, error) {
	d := decoder{b: v}
	s := stats{streams: d.u64(), events: d.u64()}
	if d.err != nil || len(d.b) != 0 {
		return stats{}, fmt.Errorf("%w: stats of %d bytes", ErrCorrupt, len(v))
	}
	return s, nil
}
