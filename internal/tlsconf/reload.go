// Package tlsconf holds esd's transport security: the TLS configurations
// of the server (certificates re-read on demand and when their files
// change, without dropping connections) and of clients, the identity a
// verified client certificate carries, and a generator of certificates
// for development and tests.
package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
)

// ClientAuth says whether the server asks clients for certificates.
type ClientAuth int

const (
	// NoClientCert: no client certificates (no ClientCA).
	NoClientCert ClientAuth = iota
	// RequireClientCert: a client must present a certificate that a CA of
	// ClientCA signed (mTLS).
	RequireClientCert
	// VerifyClientCertIfGiven: a client may connect without a
	// certificate; one it presents must verify.
	VerifyClientCertIfGiven
)

// Files are the PEM files of a server's TLS configuration.
type Files struct {
	Cert, Key string // the server's certificate (chain) and private key
	// ClientCA is a bundle of CA certificates that client certificates
	// must chain to; "" asks for none.
	ClientCA   string
	ClientAuth ClientAuth // with ClientCA: RequireClientCert when unset
}

// Reloader serves the TLS configuration of Files and re-reads them on
// Reload (esd calls it on SIGHUP) and, under Watch, when they change. New
// handshakes use the files last read successfully; connections already
// made keep theirs. A reload that fails (a missing file, bad PEM, a key
// that does not match its certificate) keeps the configuration in force.
type Reloader struct {
	files Files
	lg    *zap.Logger
	met   *metrics
	mu    sync.Mutex // one reload at a time
	cur   atomic.Pointer[state]
}

// state is what one successful read of the files gave.
type state struct {
	certPEM, keyPEM, caPEM []byte // as read, to tell whether a file changed
	cert                   *tls.Certificate
	clientCAs              *x509.CertPool
}

type metrics struct {
	reloads           *prometheus.CounterVec
	expiry            prometheus.Gauge
	handshakeFailures prometheus.Counter
}

// NewReloader reads files once, failing when they are not a usable
// configuration, and registers esd_tls_* metrics with reg (nil: none).
func NewReloader(files Files, lg *zap.Logger, reg prometheus.Registerer) (*Reloader, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("TLS needs a certificate and a key file")
	}
	if files.ClientCA != "" && files.ClientAuth == NoClientCert {
		files.ClientAuth = RequireClientCert
	}
	if files.ClientCA == "" {
		files.ClientAuth = NoClientCert
	}
	if lg == nil {
		lg = zap.NewNop()
	}
	r := &Reloader{files: files, lg: lg, met: &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_tls_reloads_total",
			Help: "Reloads of the TLS certificate, key and client CA files, by result (success, failure: the files in force stay).",
		}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esd_tls_certificate_expiry_timestamp_seconds",
			Help: "When the server certificate in force expires (its NotAfter), in unix seconds.",
		}),
		handshakeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_tls_handshake_failures_total",
			Help: "gRPC connections whose TLS handshake failed: no, an expired or an untrusted client certificate, a client that does not trust the server's, plain text on the TLS port.",
		}),
	}}
	r.met.reloads.WithLabelValues("success")
	r.met.reloads.WithLabelValues("failure")
	st, err := r.read()
	if err != nil {
		return nil, err
	}
	r.install(st)
	if reg != nil {
		if err := reg.Register(r.met.reloads); err != nil {
			return nil, err
		}
		if err := reg.Register(r.met.expiry); err != nil {
			return nil, err
		}
		if err := reg.Register(r.met.handshakeFailures); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// read reads and checks the files.
func (r *Reloader) read() (*state, error) {
	var st state
	var err error
	if st.certPEM, err = os.ReadFile(r.files.Cert); err != nil {
		return nil, err
	}
	if st.keyPEM, err = os.ReadFile(r.files.Key); err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(st.certPEM, st.keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", r.files.Cert, r.files.Key, err)
	}
	st.cert = &cert
	if r.files.ClientCA != "" {
		if st.caPEM, err = os.ReadFile(r.files.ClientCA); err != nil {
			return nil, err
		}
		st.clientCAs = x509.NewCertPool()
		if !st.clientCAs.AppendCertsFromPEM(st.caPEM) {
			return nil, fmt.Errorf("%s: no PEM certificates", r.files.ClientCA)
		}
	}
	return &st, nil
}

func (r *Reloader) install(st *state) {
	r.cur.Store(st)
	r.met.expiry.Set(float64(st.cert.Leaf.NotAfter.Unix()))
}

// Reload re-reads the files and, when they make a usable configuration,
// puts it in force for new handshakes; otherwise it keeps the one in
// force and returns why. Each call counts in esd_tls_reloads_total.
func (r *Reloader) Reload() error {
	_, err := r.reload(true)
	return err
}

// reload reloads; unless always, files unchanged since the last read are
// no reload at all (a watched directory has other files too).
func (r *Reloader) reload(always bool) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.read()
	if err != nil {
		r.met.reloads.WithLabelValues("failure").Inc()
		r.lg.Error("TLS reload failed, keeping the certificate in force",
			zap.Error(err), zap.String("serial", r.Certificate().SerialNumber.Text(16)))
		return true, err
	}
	old := r.cur.Load()
	if !always && bytes.Equal(old.certPEM, st.certPEM) && bytes.Equal(old.keyPEM, st.keyPEM) && bytes.Equal(old.caPEM, st.caPEM) {
		return false, nil
	}
	r.install(st)
	r.met.reloads.WithLabelValues("success").Inc()
	leaf := st.cert.Leaf
	fields := []zap.Field{
		zap.String("cert", r.files.Cert), zap.String("serial", leaf.SerialNumber.Text(16)),
		zap.String("subject", leaf.Subject.String()), zap.Time("not_after", leaf.NotAfter),
	}
	if r.files.ClientCA != "" {
		fields = append(fields, zap.String("client_ca", r.files.ClientCA))
	}
	r.lg.Info("TLS files reloaded", fields...)
	if time.Now().After(leaf.NotAfter) {
		r.lg.Warn("the TLS certificate in force has expired: clients will refuse it", zap.Time("not_after", leaf.NotAfter))
	}
	return true, nil
}

// Certificate returns the server certificate in force.
func (r *Reloader) Certificate() *x509.Certificate { return r.cur.Load().cert.Leaf }

// ServerConfig returns a server configuration that takes the files in
// force at each handshake, offering nextProtos by ALPN ("h2" for gRPC;
// "h2", "http/1.1" for HTTP). With verifyClients it asks for client
// certificates as Files say; without, it asks for none (esd's HTTP
// listener: health probes and scrapers rarely have one).
//
// TLS 1.2 at least (1.3 is chosen when both sides have it) with Go's
// default cipher suites. Session tickets are off: a resumed session skips
// certificate verification, so it would outlive a client CA taken out of
// the bundle; gRPC connections are long-lived, so they cost nothing.
func (r *Reloader) ServerConfig(verifyClients bool, nextProtos ...string) *tls.Config {
	type built struct {
		from *state
		cfg  *tls.Config
	}
	var cache atomic.Pointer[built]
	return &tls.Config{
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
		NextProtos:             nextProtos,
		// A configuration per successful read, built at the first
		// handshake after it and shared by the handshakes that follow.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			st := r.cur.Load()
			if b := cache.Load(); b != nil && b.from == st {
				return b.cfg, nil
			}
			cfg := &tls.Config{
				MinVersion:             tls.VersionTLS12,
				SessionTicketsDisabled: true,
				NextProtos:             nextProtos,
				Certificates:           []tls.Certificate{*st.cert},
			}
			if verifyClients && st.clientCAs != nil {
				cfg.ClientCAs = st.clientCAs
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
				if r.files.ClientAuth == VerifyClientCertIfGiven {
					cfg.ClientAuth = tls.VerifyClientCertIfGiven
				}
			}
			cache.Store(&built{from: st, cfg: cfg})
			return cfg, nil
		},
	}
}

// Watch reloads when a file in the directories of Files changes, until
// ctx ends. It watches directories, not files: editors and Kubernetes
// replace a file by renaming a new one over it (Kubernetes swaps a
// symlink to a directory), which ends a watch on the file itself. Events
// are debounced: a reload happens once the directories have been quiet
// for debounce, so that a certificate and its key written one after the
// other are read together. Events that leave the files' contents as they
// were cause no reload.
func (r *Reloader) Watch(ctx context.Context, debounce time.Duration) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close() //nolint:errcheck // nothing to do about it at the end
	dirs := map[string]bool{}
	for _, f := range []string{r.files.Cert, r.files.Key, r.files.ClientCA} {
		if f == "" {
			continue
		}
		d := filepath.Dir(f)
		if dirs[d] {
			continue
		}
		dirs[d] = true
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue // no new contents
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.lg.Warn("watching the TLS files", zap.Error(err))
		case <-timer.C:
			_, _ = r.reload(false) // logged and counted
		}
	}
}

// GRPCCredentials are the gRPC server's transport credentials: TLS with
// ServerConfig(true, "h2"), counting the handshakes that fail in
// esd_tls_handshake_failures_total and logging each at debug level with
// its reason (gRPC itself keeps them to its own logger, silent by
// default). A client refused for its certificate sees only a closed
// connection or an alert; the operator finds why here.
func (r *Reloader) GRPCCredentials() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: credentials.NewTLS(r.ServerConfig(true, "h2")), r: r}
}

type countingCreds struct {
	credentials.TransportCredentials
	r *Reloader
}

func (c *countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.r.met.handshakeFailures.Inc()
		c.r.lg.Debug("TLS handshake failed", zap.Stringer("peer", conn.RemoteAddr()), zap.Error(err))
	}
	return out, info, err
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), r: c.r}
}
