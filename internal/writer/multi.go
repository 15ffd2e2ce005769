package writer

import (
	"context"
	"errors"
	"sort"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
)

// AppendMulti appends ops (each to a different stream) atomically and
// waits until they are durable.
func (w *Writer) AppendMulti(ctx context.Context, ops []AppendOp) ([]AppendResult, error) {
	start := time.Now()
	res, err := w.appendMulti(ctx, ops)
	n := 0
	for i := range ops {
		n += len(ops[i].Events)
	}
	w.met.observe("append_multi", err, n, start)
	return res, err
}

// lockPart is an AppendMulti's business with one shard.
type lockPart struct {
	entries []int // indexes into the multi's ops
	ops     []*op
	ready   chan partReady // capacity 1
	release chan bool      // capacity 1: true when the writes were applied
}

type partReady struct {
	writes []*eslog.Write // one per entry; nil for no write
	res    []opResult     // one per entry
}

func (w *Writer) appendMulti(ctx context.Context, ops []AppendOp) ([]AppendResult, error) {
	var size int64
	for i := range ops {
		for j := range ops[i].Events {
			size += int64(len(ops[i].Events[j].Data) + len(ops[i].Events[j].Metadata))
		}
	}
	if err := w.reserve(size); err != nil {
		return nil, err
	}
	defer w.inflight.Add(-size)
	byShard := make(map[int]*lockPart)
	for i := range ops {
		s := w.shardOf(ops[i].Stream)
		p := byShard[s.idx]
		if p == nil {
			p = &lockPart{ready: make(chan partReady, 1), release: make(chan bool, 1)}
			byShard[s.idx] = p
		}
		p.entries = append(p.entries, i)
		p.ops = append(p.ops, newAppendOp(ops[i]))
	}
	order := make([]int, 0, len(byShard))
	for idx := range byShard {
		order = append(order, idx)
	}
	sort.Ints(order)

	var locked []*lockPart
	release := func(applied bool) {
		for _, p := range locked {
			p.release <- applied
		}
	}
	writes := make([]*eslog.Write, len(ops))
	results := make([]opResult, len(ops))
	for _, idx := range order {
		p := byShard[idx]
		if err := w.send(w.shards[idx], &op{kind: opLock, lock: p}); err != nil {
			release(false)
			return nil, err
		}
		r := <-p.ready // prompt: a shard answers a lock before anything queued after it
		locked = append(locked, p)
		for j, e := range p.entries {
			writes[e], results[e] = r.writes[j], r.res[j]
			if r.res[j].err != nil {
				release(false)
				return nil, w.refusal(ctx, r.res[j], r.res[j].err)
			}
		}
	}

	// A retried AppendMulti finds all its events stored: return the
	// original results. Some stored and some not cannot be a retry.
	var toCommit []*eslog.Write
	replays, appends := 0, 0
	for i := range ops {
		if len(ops[i].Events) == 0 {
			continue
		}
		appends++
		if results[i].replay {
			replays++
		} else {
			toCommit = append(toCommit, writes[i])
		}
	}
	if replays > 0 && replays < appends {
		release(false)
		for i := range ops {
			if len(ops[i].Events) > 0 && !results[i].replay {
				return nil, &eslog.IDConflictError{Stream: ops[i].Stream, ID: ops[i].Events[0].ID}
			}
		}
	}
	var ticket Durable
	if len(toCommit) > 0 {
		now := w.clock().UnixNano()
		for _, wr := range toCommit {
			wr.Time = now
		}
		var err error
		ticket, err = w.commit.Commit(toCommit, true)
		if err == nil {
			for _, wr := range toCommit {
				if wr.Err != nil && !errors.Is(wr.Err, eslog.ErrAborted) {
					err = wr.Err
				}
			}
		}
		if err != nil {
			release(false)
			return nil, err
		}
	}
	release(true)
	out := make([]AppendResult, len(ops))
	for i := range ops {
		r := results[i]
		if wr := writes[i]; wr != nil && !r.replay {
			r = opResult{append: writeResult(wr), ticket: ticket}
		}
		if err := w.settle(ctx, &r); err != nil {
			return nil, err
		}
		out[i] = r.append
	}
	return out, nil
}

// lockFor decides an AppendMulti's entries for this shard, hands them to
// the coordinator and blocks until it reports the outcome.
func (s *shard) lockFor(p *lockPart) {
	rs := s.newRound()
	ready := partReady{writes: make([]*eslog.Write, len(p.ops)), res: make([]opResult, len(p.ops))}
	for j, o := range p.ops {
		rs.decide(o)
		d := rs.dec[len(rs.dec)-1]
		ready.writes[j], ready.res[j] = d.write, d.res
		if d.leader >= 0 { // ids repeated across entries: validation forbids it
			ready.res[j].err = &eslog.IDConflictError{Stream: o.stream, ID: o.events[0].ID}
		}
	}
	p.ready <- ready
	if applied := <-p.release; applied {
		for _, wr := range ready.writes {
			if wr != nil && wr.Err == nil && wr.FirstPosition > 0 {
				s.cache.put(wr.After)
			}
		}
	}
}

// stateCache is a shard's bounded cache of stream states. When full it
