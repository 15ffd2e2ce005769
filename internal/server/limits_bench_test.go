package server

import (
	"context"
	"net"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// BenchmarkLimitsAppend100: what the limits add to an Append of 100
// events of 100 bytes when none is hit: receiving it through the codec
// with and without the pre-scan (off: no limits, as before them), and the
// in-flight admission (taking and giving back the connection's and the
// server's budget). Compare ns/op of prescan-on with prescan-off, and add
// admit to it:
//
//	go test -run '^$' -bench BenchmarkLimitsAppend100 -count 6 ./internal/server/
func BenchmarkLimitsAppend100(b *testing.B) {
	evs := make([]*esdv1.ProposedEvent, 100)
	for i := range evs {
		evs[i] = &esdv1.ProposedEvent{Id: newID(), Type: "Created", Data: make([]byte, 100)}
	}
	data, err := proto.Marshal(&esdv1.AppendRequest{Stream: "order-1", Events: evs})
	if err != nil {
		b.Fatal(err)
	}
	lim := DefaultLimits.withDefaults()
	lmt := newLimiter(lim, zap.NewNop(), prometheus.NewRegistry())
	on := newCodec()
	on.lim, on.lmt = &lim, lmt
	for name, c := range map[string]codec{"prescan-off": newCodec(), "prescan-on": on} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				lm := lenientMessage{msg: &esdv1.AppendRequest{}}
				if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, &lm); err != nil || lm.err != nil {
					b.Fatal(err, lm.err)
				}
			}
		})
	}
	b.Run("admit", func(b *testing.B) {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &connAddr{Addr: &net.TCPAddr{}, state: &connState{}}})
		b.ReportAllocs()
		for b.Loop() {
			release, err := lmt.admitAppend(ctx, 100*100)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
	b.Run("prescan-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if le := prescanAppend(&lim, (*esdv1.AppendRequest)(nil), data); le != nil {
				b.Fatal(le)
			}
		}
	})
}
