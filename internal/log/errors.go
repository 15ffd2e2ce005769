package log

import (
	"encoding/hex"
	"errors"
	"fmt"
)

var (
	// ErrStreamNotFound: the stream was never written.
	ErrStreamNotFound = errors.New("log: stream not found")
	// ErrStreamDeleted: the stream is soft-deleted.
	ErrStreamDeleted = errors.New("log: stream deleted")
	// ErrStreamTombstoned: the stream is deleted forever.
	ErrStreamTombstoned = errors.New("log: stream tombstoned")
	// ErrClosed: the log is closed.
	ErrClosed = errors.New("log: closed")
	// ErrScavenged: the event asked for was hidden and a scavenge
	// removed it.
	ErrScavenged = errors.New("log: event removed by a scavenge")
	// ErrCorrupt: a checksum or decode failure in stored data.
	ErrCorrupt = errors.New("log: corrupt record")
	// ErrStorageFailed: a write or sync failed; the log takes no more
	// writes until it is reopened. Reads go on.
	ErrStorageFailed = errors.New("log: storage failed")
	// ErrRetry: a write was not applied because an earlier write to the
	// same stream in the same commit failed; the writer re-decides it.
	ErrRetry = errors.New("log: retry after failed write to the same stream")
	// ErrAborted: a write of an atomic commit was not applied because
	// another write of that commit failed.
	ErrAborted = errors.New("log: aborted with its atomic commit")
)

// FormatError: the store was written in an on-disk format (formatVersion)
// that this esd does not read. There is no migration between formats.
type FormatError struct {
	Found uint32 // the store's format
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("log: the store is in on-disk format %d and this esd reads only format %d; "+
		"there is no migration between formats: start esd on a new, empty data directory, "+
		"or keep running the esd release that wrote this store", e.Found, formatVersion)
}

// StreamError ties a stream-level sentinel to the stream's name.
type StreamError struct {
	Stream string
	Err    error // ErrStreamNotFound, ErrStreamDeleted, ErrStreamTombstoned
}

func (e *StreamError) Error() string { return fmt.Sprintf("stream %q: %v", e.Stream, e.Err) }
func (e *StreamError) Unwrap() error { return e.Err }

// ExpectKind is the kind of an expected revision.
type ExpectKind uint8

const (
	ExpectAny ExpectKind = iota
	ExpectNoStream
	ExpectExists
	ExpectExact
)

// Expectation is what a conditional write expects of its stream.
type Expectation struct {
	Kind     ExpectKind
	Revision uint64 // for ExpectExact
}

func (e Expectation) String() string {
	switch e.Kind {
	case ExpectNoStream:
		return "no stream"
	case ExpectExists:
		return "stream exists"
	case ExpectExact:
		return fmt.Sprintf("revision %d", e.Revision)
	default:
		return "any"
	}
}

// Holds reports whether e holds for a stream in state s.
func (e Expectation) Holds(s *StreamState) bool {
	switch e.Kind {
	case ExpectNoStream:
		return !s.Exists()
	case ExpectExists:
		return s.Exists()
	case ExpectExact:
		return s.Exists() && s.Head == e.Revision
	default:
		return true
	}
}

// WrongRevisionError: an expectation did not hold; nothing was written.
type WrongRevisionError struct {
	Stream   string
	StreamID uint64 // 0 for a stream never stored
	Expected Expectation
	Head     uint64 // meaningful only when Exists
	Exists   bool
	// HeadPosition is the position of the stream's last change, so that a
	// reader of the conflict delta can wait until it is visible.
	HeadPosition uint64
	// TruncateBefore is the first visible revision.
	TruncateBefore uint64
}

func (e *WrongRevisionError) Error() string {
	if !e.Exists {
		return fmt.Sprintf("log: stream %q: expected %v, but it has no events", e.Stream, e.Expected)
	}
	return fmt.Sprintf("log: stream %q: expected %v, head is %d", e.Stream, e.Expected, e.Head)
}

// IDConflictError: an event id is already stored, on another stream or not
// as a whole retry of an earlier append; nothing was written.
type IDConflictError struct {
	Stream string // the stream being written
	ID     [16]byte
}

func (e *IDConflictError) Error() string {
	return fmt.Sprintf("log: stream %q: event id %s is already stored", e.Stream, FormatID(e.ID))
}

// FormatID formats an event id as canonical UUID text.
func FormatID(id [16]byte) string {
	var b [36]byte
	return string(AppendID(b[:0], id))
}

// AppendID appends an event id as canonical UUID text to dst.
func AppendID(dst []byte, id [16]byte) []byte {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return append(dst, b[:]...)
}

// ErrCASMismatch: an aux compare-and-swap found a value other than the
// expected one; a *CASError says which.
var ErrCASMismatch = errors.New("log: compare-and-swap: value differs")

// CASError is the failure of a compare-and-swap (Aux.CompareAndSwap): Key
// (relative to Namespace) holds Current (Exists false: it is absent), not
// the expected value. Nothing of the swap was written. It matches
// ErrCASMismatch.
type CASError struct {
	Namespace Namespace
	Key       []byte
	Current   []byte
	Exists    bool
}

func (e *CASError) Error() string {
	if !e.Exists {
		return fmt.Sprintf("log: compare-and-swap of %s key %q: value differs (key absent)", e.Namespace, e.Key)
	}
	return fmt.Sprintf("log: compare-and-swap of %s key %q: value differs (%d bytes stored)", e.Namespace, e.Key, len(e.Current))
}

func (e *CASError) Unwrap() error { return ErrCASMismatch }
