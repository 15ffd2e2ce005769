package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/server"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
)

// run starts esd and blocks until ctx ends or SIGINT/SIGTERM arrives, then
// shuts down in order (server.Serve drains the engine) and closes the
// store last. A second
// signal kills the process at once.
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

	// The store first: its lock says "another esd uses this directory",
	// which is what a second esd on the same ports must be told.
	eng, err := engine.Open(engine.Config{
		Dir:                     cfg.DataDir,
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
	})
	if err != nil {
		return fmt.Errorf("open store %s: %w", cfg.DataDir, err)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("listen %s: %w", cfg.Listen, err), eng.Close())
	}
	defer lis.Close() //nolint:errcheck // already closed by Serve on the normal path
	httpLis, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return errors.Join(fmt.Errorf("listen %s: %w", cfg.HTTPListen, err), eng.Close())
	}
	defer httpLis.Close() //nolint:errcheck // already closed by Shutdown on the normal path
	authn, err := newAuthenticator(ctx, cfg, lg, reg)
	if err != nil {
		return errors.Join(err, eng.Close())
	}
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
		},
		MaxConcurrentStreams: uint32(cfg.MaxStreamsPerConnection),
		Version:              version,
		Commit:               commit,
		GracePeriod:          cfg.GracePeriod,
		Pprof:                cfg.Pprof,
		Auth:                 authn,
		MetricsAuth:          cfg.MetricsAuth,
	}, lg.Named("server"), reg)
	if err != nil {
		return errors.Join(fmt.Errorf("start server: %w", err), eng.Close())
	}

	httpSrv := &http.Server{Handler: srv.HTTPHandler(reg), ReadHeaderTimeout: 5 * time.Second}
	httpErr := make(chan error, 1)
	go func() { httpErr <- httpSrv.Serve(httpLis) }()
	lg.Info("http listening", zap.String("addr", httpLis.Addr().String()))

	serveErr := srv.Serve(ctx, lis)

	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutCtx)
	if err := <-httpErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		serveErr = errors.Join(serveErr, fmt.Errorf("serve http: %w", err))
	}
	closeErr := eng.Close() // last: after the server and writer have drained
	if closeErr == nil {
		lg.Info("store closed", zap.String("dir", cfg.DataDir))
	}
	return errors.Join(serveErr, closeErr)
}

// newAuthenticator loads --auth-file (nil without it: security off) and
// keeps it current: reloaded when its directory changes and on SIGHUP,
// until ctx ends. A file that does not load at start is an error; later,
// the one in force stays (auth.Authenticator.Reload).
func newAuthenticator(ctx context.Context, cfg config, lg *zap.Logger, reg prometheus.Registerer) (*auth.Authenticator, error) {
	if cfg.AuthFile == "" {
		return nil, nil
	}
	a, err := auth.New(cfg.AuthFile, lg.Named("auth"), reg)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
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
	return a, nil
}

func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "esd_build_info", Help: "Always 1; labels say which esd this is.",
	}, []string{"version", "commit"})
	g.WithLabelValues(version, commit).Set(1)
	return g
}
