package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Client is a connection to one esd server. It is safe for concurrent
// use.
type Client struct {
	conn    *grpc.ClientConn
	opts    options
	streams esdv1.StreamServiceClient
	groups  esdv1.ConsumerGroupServiceClient
	snaps   esdv1.SnapshotServiceClient
	admin   esdv1.AdminServiceClient
	locks   esdv1.LockServiceClient
	// owned: Dial made conn, and Close closes it.
	owned bool
	pipe  *pipeline // nil: WithPipelining(false)
}

type options struct {
	tls      *tls.Config
	tlsErr   error
	token    string
	timeout  time.Duration // of unary calls without a deadline; 0: none
	retries  int           // attempts of idempotent calls after transport errors
	keep     keepalive.ClientParameters
	keepSet  bool
	dialOpts []grpc.DialOption
	// noPipeline: Append makes a unary call each time.
	noPipeline bool
}

// Option configures Dial.
type Option func(*options)

// WithTLS connects with TLS configured by cfg (a nil cfg: the system's
// CAs, the address's host as server name).
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = cfg
	}
}

// WithTLSFiles connects with TLS, trusting the CAs in the PEM bundle
// caFile (empty: the system's), presenting the client certificate
// certFile/keyFile when both are given (for a server that requires
// mTLS), and checking the server's certificate against serverName
// (empty: the host of the address).
func WithTLSFiles(caFile, certFile, keyFile, serverName string) Option {
	return func(o *options) {
		cfg, err := tlsConfig(caFile, certFile, keyFile, serverName)
		o.tls, o.tlsErr = cfg, err
	}
}

// WithToken sends "authorization: Bearer token" with every call, for a
// server started with --auth-file.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTimeout bounds every attempt of a call made in one piece (a unary
// call, Load, a page of a list) whose context has no deadline (default
// 10 s; 0: unbounded). Read, ReadAll, Subscribe and group members run as
// long as their context.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetries sets how many times an idempotent call is tried again
// after the server was unreachable or overloaded (default 3, with
// jittered exponential backoff). Appends are idempotent here: the client
// gives every event without an id a fresh one before the first attempt,
// so a retry of an append that was written returns its original result
// instead of writing it twice.
func WithRetries(n int) Option { return func(o *options) { o.retries = max(n, 0) } }

// WithKeepalive pings an idle connection every interval and drops it when
// no answer comes within timeout, so that a dead server or network path
// shows up on the connection instead of at the next call's deadline.
// The server accepts pings at most every 10 s by default.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(o *options) {
		o.keep = keepalive.ClientParameters{Time: interval, Timeout: timeout, PermitWithoutStream: true}
		o.keepSet = true
	}
}

// WithDialOptions passes options to grpc.NewClient as they are (after
// the client's own, so that they win).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Dial returns a client of the esd server at addr ("host:port"). It does
// not connect: a server that is down shows up as an UNAVAILABLE *Error on
// the first call (and is retried for idempotent calls).
func Dial(addr string, opts ...Option) (*Client, error) {
	o := options{timeout: 10 * time.Second, retries: 3}
	for _, fn := range opts {
		fn(&o)
	}
	if o.tlsErr != nil {
		return nil, fmt.Errorf("client TLS: %w", o.tlsErr)
	}
	var dial []grpc.DialOption
	if o.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer(o.token)))
	}
	if o.keepSet {
		dial = append(dial, grpc.WithKeepaliveParams(o.keep))
	}
	dial = append(dial, o.dialOpts...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return nil, fmt.Errorf("client: address %q: %w", addr, err)
	}
	c := newClient(conn, o)
	c.owned = true
	return c, nil
}

// New returns a client on a connection the caller made and owns (Close
// does not close it), with the options that apply to calls (WithToken
// and the TLS and keepalive options are the connection's business).
func New(conn *grpc.ClientConn, opts ...Option) *Client {
	o := options{timeout: 10 * time.Second, retries: 3}
	for _, fn := range opts {
		fn(&o)
	}
	return newClient(conn, o)
}

func newClient(conn *grpc.ClientConn, o options) *Client {
	c := &Client{
		conn:    conn,
		opts:    o,
		streams: esdv1.NewStreamServiceClient(conn),
		groups:  esdv1.NewConsumerGroupServiceClient(conn),
		snaps:   esdv1.NewSnapshotServiceClient(conn),
		admin:   esdv1.NewAdminServiceClient(conn),
		locks:   esdv1.NewLockServiceClient(conn),
	}
	if !o.noPipeline {
		c.pipe = &pipeline{c: c}
	}
	return c
}

// Close ends the client's own calls (the pipeline of appends) and closes
// the connection when Dial made it, failing the calls in flight on it
// with CANCELED.
func (c *Client) Close() error {
	if c.pipe != nil {
		c.pipe.close()
	}
	if !c.owned {
		return nil
	}
	return c.conn.Close()
}

// Conn returns the client's connection, for the calls of the esd.v1
// services the package does not wrap (esdv1.NewStreamServiceClient(c.Conn())
// and the like). Its errors are plain gRPC statuses.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// ServerInfo describes the server: its version, uptime, last position
// and store size.
func (c *Client) ServerInfo(ctx context.Context) (*esdv1.GetServerInfoResponse, error) {
	return retry(ctx, c, func(ctx context.Context) (*esdv1.GetServerInfoResponse, error) {
		return c.admin.GetServerInfo(ctx, &esdv1.GetServerInfoRequest{})
	})
}

// callCtx bounds a unary call by the client's timeout unless ctx has a
// deadline already.
func (c *Client) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return c.callCtxFor(ctx, 0)
}

// callCtxFor is callCtx for a call the server may hold for up to wait
// before it answers.
func (c *Client) callCtxFor(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.opts.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.opts.timeout+wait)
}

// bearer sends the token with every call. It does not require transport
// security, as gRPC's own token credentials do: esd on loopback or a
// trusted network may serve plain text, and that is its operator's
// choice.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

func tlsConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both its certificate and key files")
	}
	if certFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, nil
}
