package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/engine"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// streamWorkers is the number of goroutines that serve RPCs (see
// grpc.NumStreamWorkers); each keeps its grown stack, a few KiB.
const streamWorkers = 256

// Config configures a Server.
type Config struct {
	DataDir string // reported by GetServerInfo
	Limits  Limits
	Version string
	Commit  string
	// GracePeriod bounds the wait for RPCs in flight at shutdown, after
	// which they are cut. 0 means 10s.
	GracePeriod time.Duration
	// MaxConcurrentStreams bounds the RPCs in flight on one connection; 0
	// means 256.
	MaxConcurrentStreams uint32
	// Pprof mounts Go's profiler at /debug/pprof/ on the HTTP handler;
	// without it /debug/pprof/ answers 404.
	Pprof bool
	// UnaryInterceptors and StreamInterceptors, for embedding esd and for
	// tests, run in order after esd's own (metrics, the drain gate, panic
	// recovery): they see only the calls the drain gate let through, and
	// an error or panic of theirs is answered like a handler's.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
	// Auth, when set, turns security on: every call of an esd.v1 service
	// is authenticated and authorized by its auth file (authz.go), and
	// /debug/pprof/ needs admin. nil: every call is allowed.
	Auth *auth.Authenticator
	// Creds is the gRPC listener's transport security (TLS, mTLS:
	// tlsconf.Reloader.GRPCCredentials); nil: plain text. With mTLS and Auth, a verified client certificate's
	// Subject Common Name is the caller's identity.
	Creds credentials.TransportCredentials
	// MetricsAuth puts /metrics behind admin too (with Auth set); without
	// it /metrics, like /healthz and /readyz, stays open to scrapers.
	MetricsAuth bool

	appendStream appendStreamConfig // tests lower its bounds
}

// Server is the esd.v1 gRPC front door of an engine.
type Server struct {
	cfg      Config
	eng      *engine.Engine
	lg       *zap.Logger
	grpc     *grpc.Server
	health   *health.Server
	draining atomic.Bool // new requests are refused
	// authFailures counts refused calls by reason (with Config.Auth).
	authFailures *prometheus.CounterVec
	limits       identityLimits // per-identity call rates (with Config.Auth)
	lmt          *limiter
}

// New builds the esd.v1 services on eng, registering their metrics with
// reg; Serve runs them and, when its ctx ends, drains eng.
func New(eng *engine.Engine, cfg Config, lg *zap.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 10 * time.Second
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = 256
	}
	if lg == nil {
		lg = zap.NewNop()
	}
	s := &Server{
		cfg:    cfg,
		eng:    eng,
		lg:     lg,
		health: health.NewServer(),
	}
	s.lmt = newLimiter(cfg.Limits, lg, reg)
	if eng != nil {
		s.lmt.behind = eng.Log().Behind
	}
	s.lmt.large = newLane(largeLaneBytes, max(cfg.Limits.LargeAppendRate, 0))
	cdc := newCodec()
	cdc.lim, cdc.lmt = &s.cfg.Limits, s.lmt
	grpcMet := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.0001, 2, 18))))
	reg.MustRegister(grpcMet)
	recover := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		lg.Error("panic in handler", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	unary := []grpc.UnaryServerInterceptor{grpcMet.UnaryServerInterceptor(), s.unaryGate, recovery.UnaryServerInterceptor(recover)}
	streams := []grpc.StreamServerInterceptor{
		strictStreams, // first: undecodable requests are INVALID_ARGUMENT (decode.go)
		grpcMet.StreamServerInterceptor(), s.streamGate, recovery.StreamServerInterceptor(recover),
	}
	if cfg.Auth != nil {
		// After the gate (a refused call is counted and mapped like any
		// other) and before Config's own, which see only allowed calls.
		s.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_auth_refused_total",
			Help: "Calls refused by authentication (reason TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED, CERTIFICATE_UNKNOWN), an identity's rate (RATE_LIMITED) or authorization (PERMISSION_DENIED).",
		}, []string{"reason"})
		reg.MustRegister(s.authFailures)
		unary = append(unary, s.unaryAuth)
		streams = append(streams, s.streamAuth)
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.Limits.MaxAppendBytes + (1 << 20)),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.InTapHandle(s.lmt.tap), // appends over their connection's budget, refused unread (limits.go)
		// Reads stream MiBs: write in large frames and syscalls.
		grpc.WriteBufferSize(256 << 10),
		// Handlers run on reused worker goroutines, whose stacks have grown
		// already: a new goroutine per RPC spent ~8% of esd's CPU growing
		// its stack (runtime.newstack) under append -c 64. Appends block
		// until their fsync, so the server keeps many workers (shared by
		// all connections); when all are busy, gRPC starts goroutines.
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ForceServerCodecV2(cdc), // proto, plus reads' pre-encoded messages (wire.go) and the append pre-scan (prescan.go)
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ChainUnaryInterceptor(append(unary, cfg.UnaryInterceptors...)...),
		grpc.ChainStreamInterceptor(append(streams, cfg.StreamInterceptors...)...),
	}
	if cfg.Creds != nil {
		opts = append(opts, grpc.Creds(cfg.Creds))
	}
	s.grpc = grpc.NewServer(opts...)
	readMet := newReadMetrics(reg)
	var undecoded func(context.Context, string) error // a unary request that did not decode: who may hear why
	if cfg.Auth != nil {
		undecoded = s.authorizeUndecoded
	}
	// strictService: undecodable unary requests are INVALID_ARGUMENT (decode.go).
	s.grpc.RegisterService(strictService(&esdv1.StreamService_ServiceDesc, undecoded), &streamService{eng: eng, lim: cfg.Limits, met: readMet,
		as: cfg.appendStream.withDefaults(), asMet: newAppendStreamMetrics(reg), lg: lg, deny: s.deny, lmt: s.lmt})
	s.grpc.RegisterService(strictService(&esdv1.SnapshotService_ServiceDesc, undecoded), &snapshotService{eng: eng, lim: cfg.Limits, met: readMet})
	s.grpc.RegisterService(strictService(&esdv1.AdminService_ServiceDesc, undecoded), &adminService{eng: eng, cfg: cfg, started: time.Now()})
	s.grpc.RegisterService(strictService(&esdv1.LockService_ServiceDesc, undecoded), &lockService{leases: eng.Leases()})
	s.grpc.RegisterService(strictService(&esdv1.ConsumerGroupService_ServiceDesc, undecoded), &groupService{groups: eng.Groups(), deny: s.deny, lmt: s.lmt})
	s.grpc.RegisterService(strictService(&healthpb.Health_ServiceDesc, nil), s.health)
	reflection.Register(s.grpc)
	grpcMet.InitializeMetrics(s.grpc)
	return s, nil
}

// Serve serves gRPC on lis until ctx ends, then shuts down in order:
// health NOT_SERVING and new requests refused with SHUTTING_DOWN; the
// engine drains (its writer commits and answers what it has queued,
// streaming RPCs are told to end, consumer groups store their
// checkpoints); in-flight RPCs get GracePeriod to finish, then are cut.
// It returns after that; the caller closes the engine last. A listener failure
// returns at once (after the same shutdown).
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.lmt.listener(lis)) }()
	s.lg.Info("listening", zap.String("addr", lis.Addr().String()), zap.Int("shards", s.eng.Shards()), zap.Bool("tls", s.cfg.Creds != nil))
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		serveErr = fmt.Errorf("serve grpc: %w", serveErr)
	}
	s.shutdown()
	if serveErr == nil {
		if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr = err
		}
	}
	return serveErr
}

func (s *Server) shutdown() {
	start := time.Now()
	s.draining.Store(true)
	s.health.Shutdown() // NOT_SERVING for every service
	s.eng.Drain()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(s.cfg.GracePeriod):
		s.lg.Warn("grace period over, cutting RPCs in flight", zap.Duration("duration", s.cfg.GracePeriod))
		s.grpc.Stop()
		<-stopped
	}
	s.lg.Info("server stopped", zap.Duration("duration", time.Since(start)))
}

// Ready reports whether the server takes requests.
func (s *Server) Ready() bool { return !s.draining.Load() && s.eng.Ready() }

// HTTPHandler serves /metrics from g, /healthz (the process is alive),
// /readyz (it takes requests and its storage works) and, when
// Config.Pprof is set, Go's profiler at /debug/pprof/ (off by default:
// profiles and traces expose the process's memory and cost CPU).
func (s *Server) HTTPHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	if s.cfg.Pprof {
		// With security on, admin only (httpAdmin): profiles show memory.
		mux.Handle("/debug/pprof/", s.httpAdmin(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", s.httpAdmin(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", s.httpAdmin(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", s.httpAdmin(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", s.httpAdmin(http.HandlerFunc(pprof.Trace)))
	}
	metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	if s.cfg.MetricsAuth {
		metrics = s.httpAdmin(metrics)
	}
	mux.Handle("/metrics", metrics)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case s.draining.Load(), s.eng.Stopping().Err() != nil: // this front door or another stopped
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case s.eng.Failed() != nil && s.cfg.Auth != nil:
			// /readyz is open to anyone who reaches the port; the failure
			// names files of the data directory, which with security on only
			// admin learns (GetServerInfo). The error is in esd's log.
			http.Error(w, "storage failed (the error is in esd's log)", http.StatusServiceUnavailable)
		case s.eng.Failed() != nil:
			http.Error(w, "storage failed: "+s.eng.Failed().Error(), http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	return mux
}

// unaryGate refuses requests while draining, maps handler errors to
// statuses and logs the ones an operator must see.
func (s *Server) unaryGate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if s.draining.Load() && info.FullMethod != healthpb.Health_Check_FullMethodName {
		return nil, toStatus(engine.ErrShuttingDown)
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	return resp, s.mapError(ctx, info.FullMethod, err, start)
}

func (s *Server) streamGate(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if s.draining.Load() {
		return toStatus(engine.ErrShuttingDown)
	}
	ctx, cancel := context.WithCancel(context.WithValue(ss.Context(), rpcCtxKey{}, ss.Context()))
	defer cancel()
	defer context.AfterFunc(s.eng.Stopping(), cancel)() // end streaming RPCs at shutdown
	start := time.Now()
	err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	if err != nil && errors.Is(err, context.Canceled) && s.eng.Stopping().Err() != nil && ss.Context().Err() == nil {
		err = engine.ErrShuttingDown
	}
	return s.mapError(ss.Context(), info.FullMethod, err, start)
}

// rpcCtxKey holds, in the context of a streaming handler, the RPC's own
// context, which ends when the client goes or the server cuts the RPC but
// not when the server starts stopping (rpcContext).
type rpcCtxKey struct{}

// rpcContext returns the RPC's own context from a streaming handler's
// ctx: a handler that finishes work in flight at shutdown (AppendStream)
// does that work under it.
func rpcContext(ctx context.Context) context.Context {
	if c, ok := ctx.Value(rpcCtxKey{}).(context.Context); ok {
		return c
	}
	return ctx
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

func (s *Server) mapError(ctx context.Context, method string, err error, start time.Time) error {
	st := toStatus(err)
	if s.lg.Core().Enabled(zap.DebugLevel) || status.Code(st) == codes.Internal {
		fields := []zap.Field{zap.String("method", method), zap.Duration("duration", time.Since(start)), zap.Stringer("code", status.Code(st))}
		if p, ok := peer.FromContext(ctx); ok {
			fields = append(fields, zap.Stringer("peer", p.Addr))
		}
		if status.Code(st) == codes.Internal {
			s.lg.Error("request failed", append(fields, zap.Error(err))...)
		} else {
			s.lg.Debug("request", append(fields, zap.Error(err))...)
		}
	}
	return st
}
