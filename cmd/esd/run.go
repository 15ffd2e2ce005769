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
	"sync"
	"syscall"
	"time"

	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/server"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/tlsconf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
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
	tlsFiles, err := newTLS(cfg, lg, reg)
	if err != nil {
		return errors.Join(err, eng.Close())
	}
	var grpcCreds credentials.TransportCredentials
	var httpTLS *tls.Config
	if tlsFiles != nil {
		grpcCreds = tlsFiles.GRPCCredentials()
		// The HTTP listener asks for no client certificate: health probes
		// and scrapers rarely have one, and it serves no events.
		httpTLS = tlsFiles.ServerConfig(false, "h2", "http/1.1")
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
	srv, err := server.New(eng, server.Config{
		DataDir:     cfg.DataDir,
		Limits:      server.Limits{MaxEventBytes: cfg.MaxEventBytes, MaxAppendBytes: cfg.MaxAppendBytes},
		Version:     version,
		Commit:      commit,
		GracePeriod: cfg.GracePeriod,
		Pprof:       cfg.Pprof,
		Creds:       grpcCreds,
	}, lg.Named("server"), reg)
	if err != nil {
		return errors.Join(fmt.Errorf("start server: %w", err), eng.Close())
	}

	// Not under ctx: a SIGHUP during shutdown must still not end esd
	// (stopping the handler restores SIGHUP's default action).
	reloadCtx, stopReload := context.WithCancel(context.WithoutCancel(ctx))
	reloadDone := reloadTLS(reloadCtx, tlsFiles, lg)
	defer func() {
		stopReload()
		<-reloadDone
	}()

	httpSrv := &http.Server{
		Handler: srv.HTTPHandler(reg), ReadHeaderTimeout: 5 * time.Second, TLSConfig: httpTLS,
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
