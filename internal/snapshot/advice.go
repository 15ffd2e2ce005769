package snapshot

import (
	"context"
	"maps"

	eslog "github.com/esdhq/esd/internal/log"
	"go.uber.org/zap"
)

// policyFor returns the policy of stream's category.
func (s *Store) policyFor(stream string) Policy {
	if m := *s.policies.Load(); len(m) > 0 {
		if p, ok := m[eslog.Category(stream)]; ok {
			return p
		}
	}
	return s.cfg.Default
}

// Policy returns the policy that applies to category: its own, or the
// default (isDefault).
func (s *Store) Policy(category string) (p Policy, isDefault bool) {
	if p, ok := (*s.policies.Load())[category]; ok {
		return p, false
	}
	return s.cfg.Default, true
}

// SetPolicy sets category's own policy, durably.
func (s *Store) SetPolicy(category string, p Policy) error {
	return s.changePolicy(category, &p)
}

// DeletePolicy removes category's own policy, durably: the default
// applies again.
func (s *Store) DeletePolicy(category string) error {
	return s.changePolicy(category, nil)
}

func (s *Store) changePolicy(category string, p *Policy) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.polMu.Lock()
	defer s.polMu.Unlock()
	w := &eslog.AuxWrite{}
	if p != nil {
		w.Put(policyKey(category), encodePolicy(*p))
	} else {
		w.Delete(policyKey(category))
	}
	if err := s.aux.Apply(w); err != nil {
		return err
	}
	m := maps.Clone(*s.policies.Load())
	if p != nil {
		m[category] = *p
	} else {
		delete(m, category)
	}
	s.policies.Store(&m)
	return nil
}

// Advise returns the snapshot advice for stream after an append left
// its head at head (exists: the stream has visible events). It costs
// nothing when no policy applies to the stream's category; otherwise a
// lookup in the advice cache, and on a miss two reads of the store.
func (s *Store) Advise(stream string, head uint64, exists bool) Advice {
	p := s.policyFor(stream)
	if p.Off() {
		return Advice{}
	}
	if !exists {
		return Advice{Applies: true}
	}
	base, ok, gen := s.cache.get(stream)
	if !ok {
		s.met.cacheMisses.Inc()
		b, err := s.loadBase(stream)
		if err != nil {
			s.lg.Debug("snapshot advice: read the latest snapshot", zap.String("stream", stream), zap.Error(err))
			return Advice{Applies: true}
		}
		base = b
		s.cache.putLoaded(stream, base, gen)
	}
	return s.decide(p, stream, head, base, "append")
}

// loadBase reads a stream's advice base from the store: the revision
// after its newest usable snapshot, or its first visible revision (past
// a soft delete and the retention limits, as Load counts it).
func (s *Store) loadBase(stream string) (uint64, error) {
	st, ok, err := s.log.State(stream)
	if err != nil || !ok {
		return 0, err
	}
	first, err := s.log.VisibleFrom(context.Background(), &st)
	if err != nil {
		return 0, err
	}
	es, _, err := s.readIndex(stream)
	if err != nil {
		return 0, err
	}
	base := first
	for i := len(es) - 1; i >= 0; i-- {
		if e := es[i]; e.rev >= first && e.rev <= st.Head {
			base = max(base, e.rev+1)
			break
		}
	}
	return base, nil
}

// decide applies p to a stream at head whose advice base is base.
func (s *Store) decide(p Policy, stream string, head, base uint64, source string) Advice {
	a := Advice{Applies: true}
	if head+1 > base {
		a.EventsSince = head + 1 - base
	}
	switch {
	case p.Every > 0 && a.EventsSince >= p.Every:
		a.Advised = true
		s.met.advised.WithLabelValues("every", source).Inc()
	case p.ReplayThreshold > 0 && a.EventsSince > 0 &&
		float64(a.EventsSince)*s.rates.rate(stream, s.now()) >= float64(p.ReplayThreshold):
		a.Advised = true
		s.met.advised.WithLabelValues("dynamic", source).Inc()
	}
	return a
}

// LoadRate returns the stream's estimated load rate, in loads per second
// (see loadRates for the bound of the estimate).
func (s *Store) LoadRate(stream string) float64 { return s.rates.rate(stream, s.now()) }

// LoadResult is what a Load sent.
type LoadResult struct {
	// Head is the stream's head when the load started.
	Head uint64
	// Snapshot is the revision of the snapshot sent, when Found.
	Snapshot uint64
	Found    bool
	// Replayed is the number of events sent.
	Replayed uint64
	Advice   Advice
}

// Load sends stream's newest usable snapshot of schema version schema
// (if any) to onSnapshot, then every visible event after it to emit
// (views, valid only during the call), from one view of the stream: its
// state is read once, at the start, and the snapshot chosen, the events
// read and the head returned are those of that state. The load counts
// towards the stream's load rate. Errors: *eslog.StreamError as a read
// of the stream gets, and the callbacks'.
func (s *Store) Load(ctx context.Context, stream string, schema uint32, onSnapshot func(*Snapshot) error, emit func(*eslog.EventView) error) (LoadResult, error) {
	if s.closed.Load() {
		return LoadResult{}, ErrClosed
	}
	_, _, gen := s.cache.get(stream) // before the state: a delete after it keeps the load's base out
	st, err := s.readState(ctx, stream)
	if err != nil {
		return LoadResult{}, err
	}
	s.rates.add(stream, s.now())
	sn, base, err := s.latest(stream, &st, 0, schema)
	if err != nil {
		return LoadResult{}, err
	}
	res := LoadResult{Head: st.Head}
	q := eslog.StreamQuery{Stream: stream}
	if sn != nil {
		res.Snapshot, res.Found = sn.Revision, true
		if err := onSnapshot(sn); err != nil {
			return res, err
		}
		q.From, q.FromSet = sn.Revision+1, true
	}
	err = s.log.ReadStateViews(ctx, &st, q, func(ev *eslog.EventView) error {
		res.Replayed++
		return emit(ev)
	})
	if err != nil {
		return res, err
	}
	hit := "miss"
	if res.Found {
		hit = "hit"
	}
	s.met.loads.WithLabelValues(hit).Inc()
	s.met.replayed.Observe(float64(res.Replayed))
	s.cache.putLoaded(stream, base, gen)
	if p := s.policyFor(stream); !p.Off() {
		res.Advice = s.decide(p, stream, st.Head, base, "load")
	}
	return res, nil
}
