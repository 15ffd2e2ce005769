package group

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
)

// Store is what groups need of the log: their namespace of its aux key
// space (eslog.NSGroups) for their durable state, and single events for
// the parked list. *eslog.Log is one.
type Store interface {
	Aux(ns eslog.Namespace) *eslog.Aux
	EventAt(pos uint64) (*eslog.RecordedEvent, bool, error)
	LastPosition() uint64
}

// Keys in eslog.NSGroups, whose prefix is "grp/": on disk a key is 0x09
// "grp/" then the key below, as before namespaces were explicit. Names
// hold no 0x00, so 0x00 ends one.
//
//	s/<name>          -> settings (JSON)
//	c/<name>          -> checkpoint (8 bytes)
//	p/<name> 0x00 pos -> parked entry (JSON)
const (
	settingsPrefix   = "s/"
	checkpointPrefix = "c/"
	parkedPrefix     = "p/"
)

func settingsKey(name string) []byte   { return []byte(settingsPrefix + name) }
func checkpointKey(name string) []byte { return []byte(checkpointPrefix + name) }
func parkedGroupPrefix(name string) []byte {
	return append([]byte(parkedPrefix+name), 0)
}
func parkedKey(name string, pos uint64) []byte {
	return binary.BigEndian.AppendUint64(parkedGroupPrefix(name), pos)
}

// Strategy is how a group shares events among its members.
type Strategy uint8

const (
	RoundRobin Strategy = iota
	ByStream
)

// Settings are a group's settings.
type Settings struct {
	Name           string
	Target         subscription.TargetKind
	TargetName     string // the stream or category
	StreamPrefixes []string
	TypePrefixes   []string
	AckTimeout     time.Duration
	MaxDeliveries  int
	MaxInFlight    int
	Strategy       Strategy
}

// Defaults and bounds of the settings.
const (
	DefaultAckTimeout    = 30 * time.Second
	MinAckTimeout        = 100 * time.Millisecond
	DefaultMaxDeliveries = 10
	DefaultMaxInFlight   = 1000
	MaxMaxInFlight       = 100_000
)

// withDefaults fills zero settings with their defaults.
func (s Settings) withDefaults() Settings {
	if s.AckTimeout == 0 {
		s.AckTimeout = DefaultAckTimeout
	}
	if s.MaxDeliveries == 0 {
		s.MaxDeliveries = DefaultMaxDeliveries
	}
	if s.MaxInFlight == 0 {
		s.MaxInFlight = DefaultMaxInFlight
	}
	return s
}

// storedSettings is the JSON form, versioned.
type storedSettings struct {
	V              int           `json:"v"`
	Name           string        `json:"name"`
	Target         uint8         `json:"target"`
	TargetName     string        `json:"target_name,omitempty"`
	StreamPrefixes []string      `json:"stream_prefixes,omitempty"`
	TypePrefixes   []string      `json:"type_prefixes,omitempty"`
	AckTimeout     time.Duration `json:"ack_timeout"`
	MaxDeliveries  int           `json:"max_deliveries"`
	MaxInFlight    int           `json:"max_in_flight"`
	Strategy       uint8         `json:"strategy"`
}

func encodeSettings(s Settings) []byte {
	b, _ := json.Marshal(storedSettings{V: 1, Name: s.Name, Target: uint8(s.Target), TargetName: s.TargetName,
		StreamPrefixes: s.StreamPrefixes, TypePrefixes: s.TypePrefixes, AckTimeout: s.AckTimeout,
		MaxDeliveries: s.MaxDeliveries, MaxInFlight: s.MaxInFlight, Strategy: uint8(s.Strategy)})
	return b
}

func decodeSettings(b []byte) (Settings, error) {
	var st storedSettings
	if err := json.Unmarshal(b, &st); err != nil || st.V != 1 || st.Name == "" {
		return Settings{}, errors.Join(fmt.Errorf("group settings: %w", eslog.ErrCorrupt), err)
	}
	return Settings{Name: st.Name, Target: subscription.TargetKind(st.Target), TargetName: st.TargetName,
		StreamPrefixes: st.StreamPrefixes, TypePrefixes: st.TypePrefixes, AckTimeout: st.AckTimeout,
		MaxDeliveries: st.MaxDeliveries, MaxInFlight: st.MaxInFlight, Strategy: Strategy(st.Strategy)}, nil
}

// Parked is a parked event.
type Parked struct {
	Position      uint64
	Event         *eslog.RecordedEvent // nil if the event was deleted since
	DeliveryCount int
	Reason        string
	ParkedAt      time.Time
}

type storedParked struct {
	Count  int       `json:"count"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

func encodeParked(count int, reason string, at time.Time) []byte {
	b, _ := json.Marshal(storedParked{Count: count, Reason: reason, At: at})
	return b
}

func decodeParked(pos uint64, b []byte) (Parked, error) {
	var p storedParked
	if err := json.Unmarshal(b, &p); err != nil {
		return Parked{}, fmt.Errorf("parked entry %d: %w: %w", pos, eslog.ErrCorrupt, err)
	}
	return Parked{Position: pos, DeliveryCount: p.Count, Reason: p.Reason, ParkedAt: p.At}, nil
}

func decodeCheckpoint(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("group checkpoint: %w", eslog.ErrCorrupt)
	}
	return binary.BigEndian.Uint64(b), nil
}
