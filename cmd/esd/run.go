package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/lease"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/server"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/tlsconf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
)

// lowDiskBytes: below this much free space in the data directory's file
// system, startup warns that the store's recovery may not finish (it
// writes: the replayed WAL is flushed to a table before Open returns).
const lowDiskBytes = 64 << 20

// run starts esd and blocks until ctx ends or SIGINT/SIGTERM arrives, then
// shuts down in order (server.Serve drains the engine) and closes the
// store last. A second signal kills the process at once.
//
// The stages, each of which a signal ends:
//  1. HTTP listens first, so that /healthz answers (and /readyz says
//     "starting") while the store opens, however long that takes;
//  2. the store opens (Pebble replays its WAL): bounded by
//     --startup-timeout, after which esd exits with an error;
//  3. gRPC listens and serves until the signal;
//  4. the server drains, the store closes.
func run(ctx context.Context, cfg config, lg *zap.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // the default action again: a second signal ends the process
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)

	maxConns := fitConnections(cfg.MaxConnections, raiseFileLimit(), lg)

	// A second esd on the same directory (and so, likely, the same
	// ports) must hear of the lock, not of the port in use.
	if err := eslog.CheckLock(cfg.DataDir, cfg.fs); err != nil {
		return fmt.Errorf("open store %s: %w", cfg.DataDir, err)
	}
	tlsFiles, err := newTLS(cfg, lg, reg)
	if err != nil {
		return err
	}
	var grpcCreds credentials.TransportCredentials
	var httpTLS *tls.Config
	if tlsFiles != nil {
		grpcCreds = tlsFiles.GRPCCredentials()
		// The HTTP listener asks for no client certificate: health probes
		// and scrapers rarely have one, and it serves no events.
		httpTLS = tlsFiles.ServerConfig(false, "h2", "http/1.1")
	}
	// Security is on whenever TLS is: every call is then authenticated
	// and authorized by an auth file (with development certificates, a
	// development one; see devAuthFile).
	if cfg, err = securityConfig(cfg, lg); err != nil {
		return err
	}
	// Not under ctx: a SIGHUP during shutdown must still not end esd
	// (stopping the handler restores SIGHUP's default action).
	reloadCtx, stopReload := context.WithCancel(context.WithoutCancel(ctx))
	reloadDone := reloadTLS(reloadCtx, tlsFiles, lg)
	defer func() {
		stopReload()
		<-reloadDone
	}()

	httpLis, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTPListen, err)
	}
	defer httpLis.Close() //nolint:errcheck // already closed by Shutdown on the normal path
	var handler switchHandler
	handler.set(startingHandler(reg, !cfg.MetricsAuth))
	httpSrv := &http.Server{
		Handler: &handler, ReadHeaderTimeout: 5 * time.Second, TLSConfig: httpTLS,
		// Into esd's log (a plain-text request on the TLS port, a failed
		// handshake), not onto stderr in another format.
		ErrorLog: zap.NewStdLog(lg.Named("http")),
	}
	httpErr := make(chan error, 1)
	go func() {
		if httpTLS != nil {
			httpErr <- httpSrv.ServeTLS(httpLis, "", "") // the certificate comes from TLSConfig
		} else {
			httpErr <- httpSrv.Serve(httpLis)
		}
	}()
	lg.Info("http listening", zap.String("addr", httpLis.Addr().String()), zap.Bool("tls", httpTLS != nil))
	stopHTTP := func() error {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = httpSrv.Shutdown(shutCtx)
		if err := <-httpErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	}

	// The auth file before the store: a bad one fails at once. Watched
	// like the TLS files (under reloadCtx) until run returns, which waits
	// for the watch to end: its fsnotify watcher is closed by then, on
	// every return, a failed start's included.
	authn, authDone, err := newAuthenticator(reloadCtx, cfg, lg, reg)
	if err != nil {
		return errors.Join(err, stopHTTP())
	}
	defer func() {
		stopReload()
		<-authDone
	}()
	eng, err := openStore(ctx, cfg, lg, reg)
	if err != nil || eng == nil { // eng nil: a signal during the open
		return errors.Join(err, stopHTTP())
	}

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("listen %s: %w", cfg.Listen, err), stopHTTP(), eng.Close())
	}
	defer lis.Close() //nolint:errcheck // already closed by Serve on the normal path
	srv, err := server.New(eng, server.Config{
		DataDir: cfg.DataDir,
		Limits: server.Limits{
			MaxEventBytes:                 cfg.MaxEventBytes,
			MaxAppendBytes:                cfg.MaxAppendBytes,
			MaxAppendEvents:               cfg.MaxAppendEvents,
			MaxRequestDecodedBytes:        cfg.MaxRequestDecodedBytes,
			MaxConnections:                maxConns,
			MaxSubscriptions:              cfg.MaxSubscriptions,
			MaxSubscriptionsPerConnection: cfg.MaxSubscriptionsPerConnection,
			SubscriptionMemoryBytes:       cfg.SubscriptionMemoryBytes,
			SubscriberStallTimeout:        cfg.SubscriberStallTimeout,
			MaxInflightBytes:              cfg.MaxInflightBytes,
			MaxInflightBytesPerConnection: cfg.MaxInflightBytesPerConnection,
			LargeAppendRate:               largeAppendRate(cfg.LargeAppendRate),
		},
		MaxConcurrentStreams: uint32(cfg.MaxStreamsPerConnection),
		Version:              version,
		Commit:               commit,
		GracePeriod:          cfg.GracePeriod,
		Pprof:                cfg.Pprof,
		Creds:                grpcCreds,
		Auth:                 authn,
		MetricsAuth:          cfg.MetricsAuth,
	}, lg.Named("server"), reg)
	if err != nil {
		return errors.Join(fmt.Errorf("start server: %w", err), stopHTTP(), eng.Close())
	}
	handler.set(srv.HTTPHandler(reg))

	// The storage watch ends serving (as a signal does) once a failed
	// store's disk takes writes again: esd then restarts (errRestart).
	serveCtx, endServe := context.WithCancel(ctx)
	defer endServe()
	recovered := make(chan struct{})
	if cfg.StorageProbeInterval > 0 {
		go func() {
			if watchStorage(serveCtx, eng, cfg, lg) {
				close(recovered)
				endServe()
			}
		}()
	}
	serveErr := srv.Serve(serveCtx, lis)
	serveErr = errors.Join(serveErr, stopHTTP())
	closeErr := eng.Close() // last: after the server and writer have drained
	if closeErr == nil {
		lg.Info("store closed", zap.String("dir", cfg.DataDir))
	}
	select {
	case <-recovered:
		if ctx.Err() == nil { // a signal meanwhile: stop, not restart
			// Closing a failed store reports its failure again: known.
			if closeErr != nil {
				lg.Info("store closed (it reported its earlier failure)", zap.String("dir", cfg.DataDir), zap.Error(closeErr))
			}
			return errors.Join(serveErr, errRestart)
		}
	default:
	}
	return errors.Join(serveErr, closeErr)
}

// newAuthenticator loads --auth-file (nil without it: security off) and
// keeps it current: reloaded when its directory changes and on SIGHUP,
// until ctx ends; done is closed once the watch has stopped. A file that
// does not load at start is an error; later, the one in force stays
// (auth.Authenticator.Reload).
func newAuthenticator(ctx context.Context, cfg config, lg *zap.Logger, reg prometheus.Registerer) (_ *auth.Authenticator, done <-chan struct{}, _ error) {
	stopped := make(chan struct{})
	if cfg.AuthFile == "" {
		close(stopped)
		return nil, stopped, nil
	}
	a, err := auth.New(cfg.AuthFile, lg.Named("auth"), reg)
	if err != nil {
		close(stopped)
		return nil, stopped, fmt.Errorf("auth file: %w", err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer close(stopped)
		defer signal.Stop(hup)
		if err := a.Run(ctx, hup); err != nil {
			lg.Error("auth file not watched: reload with SIGHUP", zap.Error(err))
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					_ = a.Reload() // logged
				}
			}
		}
	}()
	lg.Info("security on", zap.String("auth_file", cfg.AuthFile))
	return a, stopped, nil
}

// openStore opens the engine within cfg.StartupTimeout. It returns a nil
// engine and a nil error when ctx ends first (a signal: esd stops
// cleanly), and an error when the open fails or takes too long.
//
// Pebble's Open takes no context and cannot be interrupted: on a full
// disk it waits for the flush of the replayed WAL, which fails and is
// retried without end. So it runs in its own goroutine, and when the
// signal or the timeout comes first, esd returns without it and the
// process exits: the OS releases the directory's lock and the files.
// Nothing is lost: nothing was acknowledged by this process, and Pebble
// deletes a WAL only once its contents are durable in a table. Should
// the open finish after all (in a test calling run, where the process
// goes on), the engine is closed then.
func openStore(ctx context.Context, cfg config, lg *zap.Logger, reg prometheus.Registerer) (*engine.Engine, error) {
	fs := cfg.fs
	if fs == nil {
		fs = vfs.Default
	}
	fields := []zap.Field{zap.String("dir", cfg.DataDir), zap.Duration("startup_timeout", cfg.StartupTimeout)}
	if du, err := fs.GetDiskUsage(existingParent(fs, cfg.DataDir)); err == nil {
		fields = append(fields, zap.Uint64("disk_free_bytes", du.AvailBytes))
		if du.AvailBytes < lowDiskBytes {
			lg.Warn("the data directory's file system is nearly full: the store's recovery writes, and may not finish",
				zap.String("dir", cfg.DataDir), zap.Uint64("disk_free_bytes", du.AvailBytes))
		}
	}
	lg.Info("opening store (replaying the WAL)", fields...)

	var lastBackgroundErr atomic.Pointer[error]
	type opened struct {
		eng *engine.Engine
		err error
	}
	done := make(chan opened, 1)
	start := time.Now()
	go func() {
		eng, err := engine.Open(engine.Config{
			Dir:                     cfg.DataDir,
			FS:                      cfg.fs,
			CacheBytes:              cfg.CacheBytes,
			Shards:                  cfg.Shards,
			SubscriptionBufferBytes: cfg.SubBufferBytes,
			Logger:                  lg,
			Registerer:              reg,
			Snapshots: snapshot.Config{
				Retention: cfg.SnapshotRetention,
				Default:   snapshot.Policy{Every: cfg.SnapshotEvery, ReplayThreshold: cfg.SnapshotReplayThreshold},
				HalfLife:  cfg.SnapshotLoadHalfLife,
			},
			Leases:                 lease.Config{MaxTTL: cfg.MaxLeaseTTL},
			ScavengeInterval:       cfg.ScavengeInterval,
			ScavengeRate:           cfg.ScavengeRate,
			IdempotencyWindow:      cfg.IdempotencyWindow,
			StorageBackgroundError: func(err error) { lastBackgroundErr.Store(&err) },
		})
		done <- opened{eng, err}
	}()
	abandon := func() {
		go func() {
			if o := <-done; o.eng != nil {
				_ = o.eng.Close()
			}
		}()
	}
	timer := time.NewTimer(cfg.StartupTimeout)
	defer timer.Stop()
	select {
	case o := <-done:
		if o.err != nil {
			return nil, fmt.Errorf("open store %s: %w", cfg.DataDir, o.err)
		}
		lg.Info("store open", zap.String("dir", cfg.DataDir), zap.Duration("duration", time.Since(start)))
		return o.eng, nil
	case <-ctx.Done():
		abandon()
		lg.Info("stopped while the store was opening (it opens again from its WAL at the next start)",
			zap.String("dir", cfg.DataDir), zap.Duration("after", time.Since(start)))
		return nil, nil
	case <-timer.C:
		abandon()
		err := fmt.Errorf("open store %s: not open after %v (--startup-timeout)", cfg.DataDir, cfg.StartupTimeout)
		if p := lastBackgroundErr.Load(); p != nil {
			err = fmt.Errorf("%w; the store's last background error: %w (a full or failing disk? "+
				"free space in the data directory's file system and start esd again)", err, *p)
		}
		return nil, err
	}
}

// existingParent is dir, or its nearest ancestor that exists (a new data
// directory is created by the open), for the disk usage of its file
// system.
func existingParent(fs vfs.FS, dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := fs.Stat(d); err == nil || filepath.Dir(d) == d {
			return d
		}
	}
}

// switchHandler serves HTTP with the handler set last: the starting one
// while the store opens, the server's once it is open.
type switchHandler struct{ h atomic.Pointer[http.Handler] }

func (s *switchHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *switchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// startingHandler answers while the store opens: the process is alive
// (/healthz), not ready (/readyz: 503 "starting"), and its metrics
// unless they need an admin caller.
func startingHandler(g prometheus.Gatherer, metrics bool) http.Handler {
	mux := http.NewServeMux()
	if metrics { // not with --metrics-auth: no caller is known yet
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "starting: opening the store", http.StatusServiceUnavailable)
	})
	return mux
}

// reloadTLS re-reads the TLS files on SIGHUP and when they change, until
// ctx ends (when run returns); the channel is closed when it has stopped. Without TLS, a
// SIGHUP is logged and otherwise ignored (its default would end esd).
func reloadTLS(ctx context.Context, files *tlsconf.Reloader, lg *zap.Logger) <-chan struct{} {
	done := make(chan struct{})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var wg sync.WaitGroup
	if files != nil {
		wg.Go(func() {
			if err := files.Watch(ctx, tlsWatchDebounce); err != nil {
				lg.Error("cannot watch the TLS files: they are reloaded on SIGHUP only", zap.Error(err))
			}
		})
	}
	wg.Go(func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if files == nil {
					lg.Info("SIGHUP: TLS is off, nothing to reload")
					continue
				}
				_ = files.Reload() // logged and counted by the reloader
			}
		}
	})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// tlsWatchDebounce is how long the TLS files' directories must be quiet
// before a change is read: a certificate and its key are written one
// after the other.
const tlsWatchDebounce = 500 * time.Millisecond

func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "esd_build_info", Help: "Always 1; labels say which esd this is.",
	}, []string{"version", "commit"})
	g.WithLabelValues(version, commit).Set(1)
	return g
}

// largeAppendRate is --large-append-rate as server.Limits takes it: 0
// there is the default, negative no bound.
func largeAppendRate(v int64) int64 {
	if v == 0 {
		return -1
	}
	return v
}
