package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/esdhq/esd/internal/tlsconf"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Values of --tls-client-auth.
const (
	clientAuthRequire       = "require"
	clientAuthVerifyIfGiven = "verify-if-given"
)

// tlsOn reports whether esd serves TLS: with a certificate, or with
// development certificates, unless --insecure says plain text.
func (c config) tlsOn() bool {
	return !c.Insecure && (c.TLSCert != "" || c.TLSDevDir != "")
}

// validateTLS checks the TLS flags together, and refuses plain text on an
// address other than loopback without --insecure: there, events, and any
// credentials the clients send, would cross a network unencrypted.
func (c config) validateTLS() []error {
	var errs []error
	if c.Insecure && c.TLSCert != "" {
		errs = append(errs, errors.New("--insecure and --tls-cert exclude each other"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.TLSClientCA != "" && !c.tlsOn() {
		errs = append(errs, errors.New("--tls-client-ca needs TLS: --tls-cert and --tls-key, or --tls-dev-dir"))
	}
	switch c.TLSClientAuth {
	case "", clientAuthRequire, clientAuthVerifyIfGiven:
	default:
		errs = append(errs, fmt.Errorf("--tls-client-auth %q: want %s or %s", c.TLSClientAuth, clientAuthRequire, clientAuthVerifyIfGiven))
	}
	if c.TLSClientAuth != "" && c.TLSClientCA == "" && (c.TLSDevDir == "" || c.TLSCert != "") {
		errs = append(errs, errors.New("--tls-client-auth needs a client CA: --tls-client-ca, or --tls-dev-dir"))
	}
	if c.tlsOn() || c.Insecure {
		return errs
	}
	for _, l := range []struct{ flag, addr string }{{"--listen", c.Listen}, {"--http-listen", c.HTTPListen}} {
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil || isLoopback(host) {
			continue // a bad address is reported by validate
		}
		errs = append(errs, fmt.Errorf("%s %s is not a loopback address and TLS is off: give --tls-cert and --tls-key "+
			"(or --tls-dev-dir for development certificates), or --insecure to serve plain text there anyway", l.flag, l.addr))
	}
	return errs
}

// isLoopback reports whether host names this machine only: "localhost"
// or a loopback IP. Other names are not looked up: what they resolve to
// can change after startup, so they count as reachable from outside, as
// does "" (every interface).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	host, _, _ = strings.Cut(host, "%") // an IPv6 zone
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// clientAuth maps --tls-client-auth.
func (c config) clientAuth() tlsconf.ClientAuth {
	if c.TLSClientAuth == clientAuthVerifyIfGiven {
		return tlsconf.VerifyClientCertIfGiven
	}
	return tlsconf.RequireClientCert
}

// devHosts are the names of the development server certificate.
func (c config) devHosts() []string {
	if c.TLSDevHosts != "" {
		var hosts []string
		for h := range strings.SplitSeq(c.TLSDevHosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hosts = append(hosts, h)
			}
		}
		return hosts
	}
	hosts := slices.Clone(tlsconf.DefaultDevHosts)
	if name, err := os.Hostname(); err == nil && name != "" && !slices.Contains(hosts, name) {
		hosts = append(hosts, name)
	}
	return hosts
}

// newTLS returns the reloader of esd's TLS files, or nil when TLS is off.
// With --tls-dev-dir and no --tls-cert it makes (or reuses) development
// certificates there and says so loudly: their CA's key lies next to
// them, so anyone who can read the directory can make certificates that
// esd accepts.
func newTLS(c config, lg *zap.Logger, reg prometheus.Registerer) (*tlsconf.Reloader, error) {
	if !c.tlsOn() {
		return nil, nil
	}
	files := tlsconf.Files{Cert: c.TLSCert, Key: c.TLSKey, ClientCA: c.TLSClientCA, ClientAuth: c.clientAuth()}
	if c.TLSCert == "" {
		hosts := c.devHosts()
		dev, did, err := tlsconf.EnsureDev(c.TLSDevDir, hosts)
		if err != nil {
			return nil, fmt.Errorf("development certificates in %s: %w", c.TLSDevDir, err)
		}
		files.Cert, files.Key = dev.ServerCert, dev.ServerKey
		if files.ClientCA == "" {
			files.ClientCA = dev.CA
		}
		client := dev.Clients[tlsconf.DefaultDevUser]
		lg.Warn("TLS with DEVELOPMENT certificates: not for production (their CA key is in the same directory); "+
			"give --tls-cert and --tls-key for real ones",
			zap.String("dir", c.TLSDevDir), zap.String("certificates", did), zap.Strings("hosts", hosts),
			zap.String("ca", dev.CA), zap.String("client_cert", client[0]), zap.String("client_key", client[1]),
			zap.String("esctl", fmt.Sprintf("esctl --tls-ca %s --tls-cert %s --tls-key %s server info", dev.CA, client[0], client[1])))
	}
	rl, err := tlsconf.NewReloader(files, lg.Named("tls"), reg)
	if err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	leaf := rl.Certificate()
	lg.Info("TLS on", zap.String("cert", files.Cert), zap.String("serial", leaf.SerialNumber.Text(16)),
		zap.Time("not_after", leaf.NotAfter), zap.String("client_ca", files.ClientCA),
		zap.Bool("client_cert_required", files.ClientCA != "" && files.ClientAuth == tlsconf.RequireClientCert))
	return rl, nil
}
