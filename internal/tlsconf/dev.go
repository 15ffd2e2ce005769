package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Names of the files of a development directory (WriteDev).
const (
	DevCAFile      = "ca.pem"
	DevCAKeyFile   = "ca-key.pem"
	DevServerFile  = "server.pem"
	DevServerKey   = "server-key.pem"
	DefaultDevUser = "admin" // the client certificate made when none is named
)

// DefaultDevHosts are the names a development server certificate is
// valid for when no others are given: this machine by every loopback name.
var DefaultDevHosts = []string{"localhost", "127.0.0.1", "::1"}

// DevFiles are the paths of a development directory's files.
type DevFiles struct {
	Dir                   string
	CA, CAKey             string
	ServerCert, ServerKey string
	// Clients maps a client's name to its certificate and key files
	// (NAME.pem, NAME-key.pem).
	Clients map[string][2]string
}

// DevPaths returns the paths of the files WriteDev makes in dir.
func DevPaths(dir string, clients []string) DevFiles {
	f := DevFiles{
		Dir:        dir,
		CA:         filepath.Join(dir, DevCAFile),
		CAKey:      filepath.Join(dir, DevCAKeyFile),
		ServerCert: filepath.Join(dir, DevServerFile),
		ServerKey:  filepath.Join(dir, DevServerKey),
		Clients:    map[string][2]string{},
	}
	for _, c := range clients {
		f.Clients[c] = [2]string{filepath.Join(dir, c+".pem"), filepath.Join(dir, c+"-key.pem")}
	}
	return f
}

// WriteDev makes development certificates in dir (created 0755 when
// missing): a CA, a server certificate for hosts and a client certificate
// for each of clients, leaves valid for v (zero: a year). It refuses a
// client name that is not a plain file name, or one that would overwrite
// the CA's or the server's files.
func WriteDev(dir string, hosts, clients []string, v Validity) (DevFiles, error) {
	for _, c := range clients {
		if c == "" || c != filepath.Base(c) || c[0] == '.' || slices.Contains([]string{"ca", "ca-key", "server", "server-key"}, c) {
			return DevFiles{}, fmt.Errorf("client name %q: want a plain file name other than ca and server", c)
		}
	}
	files := DevPaths(dir, clients)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return files, err
	}
	ca, err := NewCA("esd development CA", Validity{NotBefore: v.NotBefore})
	if err != nil {
		return files, err
	}
	srv, err := ca.Server(hosts, v)
	if err != nil {
		return files, err
	}
	if err := srv.WriteFiles(files.ServerCert, files.ServerKey); err != nil {
		return files, err
	}
	for _, name := range clients {
		c, err := ca.Client(name, v)
		if err != nil {
			return files, err
		}
		if err := c.WriteFiles(files.Clients[name][0], files.Clients[name][1]); err != nil {
			return files, err
		}
	}
	// The CA last: EnsureDev takes a directory with ca.pem for a complete one.
	return files, ca.WriteFiles(files.CA, files.CAKey)
}

// What EnsureDev did.
const (
	DevCreated = "created" // a new CA, server and client certificate
	DevReused  = "reused"  // the files as they were
	DevRenewed = "renewed" // a new server certificate from the CA there
)

// DevRenewBefore is how long before it expires a development server
// certificate is issued again.
const DevRenewBefore = 30 * 24 * time.Hour

// EnsureDev returns the development certificates in dir, making them
// (WriteDev, with DefaultDevUser's client certificate) when dir has no
// CA yet. A server certificate that expires within DevRenewBefore, or is
// not valid for every one of hosts (the names asked for changed, or the
// host name did: a new container), is issued again from the CA there, so
// the clients' files stay good. A dir with a CA but no server
// certificate is an error rather than a reason to overwrite the CA,
// whose clients would no longer connect. did says which it was.
func EnsureDev(dir string, hosts []string) (files DevFiles, did string, err error) {
	files = DevPaths(dir, []string{DefaultDevUser})
	_, err = os.Stat(files.CA)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		files, err = WriteDev(dir, hosts, []string{DefaultDevUser}, Validity{})
		return files, DevCreated, err
	case err != nil:
		return files, "", err
	}
	certPEM, err := os.ReadFile(files.ServerCert)
	if err == nil {
		var keyPEM []byte
		if keyPEM, err = os.ReadFile(files.ServerKey); err == nil {
			var cert tls.Certificate
			if cert, err = tls.X509KeyPair(certPEM, keyPEM); err == nil && !devCertFits(cert.Leaf, hosts) {
				return files, DevRenewed, renewDevServer(files, hosts)
			}
		}
	}
	if err != nil {
		return files, "", fmt.Errorf("development certificates in %s: %w (remove %s to make new ones)", dir, err, files.CA)
	}
	return files, DevReused, nil
}

// devCertFits reports whether cert is valid for a while yet, for hosts.
func devCertFits(cert *x509.Certificate, hosts []string) bool {
	if time.Now().Add(DevRenewBefore).After(cert.NotAfter) {
		return false
	}
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func renewDevServer(files DevFiles, hosts []string) error {
	ca, err := LoadCA(files.CA, files.CAKey)
	if err != nil {
		return fmt.Errorf("renew the development server certificate: %w", err)
	}
	srv, err := ca.Server(hosts, Validity{})
	if err != nil {
		return err
	}
	return srv.WriteFiles(files.ServerCert, files.ServerKey)
}
