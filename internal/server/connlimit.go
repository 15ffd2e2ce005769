package server

import (
	"context"
	"net"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc/peer"
)

// limitListener bounds the open connections: past MaxConnections, a new
// connection is accepted and closed at once, with nothing written (a gRPC
// client sees UNAVAILABLE and retries with backoff), and counted as
// refused. The accept loop never waits: with the limit well below the
// process's file limit, accept never fails for want of descriptors, which
// made gRPC's accept loop back off for up to a second at a time while
// every established client waited for its answers.
//
// Each connection's remote address is a connAddr carrying its connState:
// gRPC hands that address to every RPC of the connection (peer.Peer), so
// the per-connection limits cost no stats handler and no map.
type limitListener struct {
	net.Listener
	l *limiter
}

func (l *limiter) listener(lis net.Listener) net.Listener { return &limitListener{Listener: lis, l: l} }

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ll.l.connsN.Add(1) > int64(ll.l.lim.MaxConnections) {
			ll.l.connsN.Add(-1)
			_ = c.Close()
			ll.l.refuse(limitConnections, zap.Stringer("peer", c.RemoteAddr()), zap.Int("max_connections", ll.l.lim.MaxConnections))
			continue
		}
		ll.l.conns.Inc()
		return &limitConn{Conn: c, l: ll.l, addr: &connAddr{Addr: c.RemoteAddr(), state: &connState{}}}, nil
	}
}

type limitConn struct {
	net.Conn
	l    *limiter
	addr *connAddr
	once sync.Once
}

func (c *limitConn) RemoteAddr() net.Addr { return c.addr }

func (c *limitConn) Close() error {
	c.once.Do(func() {
		c.l.connsN.Add(-1)
		c.l.conns.Dec()
	})
	return c.Conn.Close()
}

// connAddr is a connection's remote address with esd's state of the
// connection.
type connAddr struct {
	net.Addr
	state *connState
}

func connOf(ctx context.Context) *connState {
	if p, ok := peer.FromContext(ctx); ok {
		if a, ok := p.Addr.(*connAddr); ok {
			return a.state
		}
	}
	return nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
