package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Default lifetimes of generated certificates: a leaf for a year, the CA
// for ten (so that leaves can be issued again from the same CA).
const (
	LeafValidity = 365 * 24 * time.Hour
	CAValidity   = 10 * 365 * 24 * time.Hour
)

// Validity is when a generated certificate is valid. A zero NotBefore is
// now minus five minutes (a little clock skew between machines must not
// make a fresh certificate "not yet valid"); a zero NotAfter is NotBefore
// plus the default lifetime. Tests set both to make expired certificates.
type Validity struct {
	NotBefore, NotAfter time.Time
}

func (v Validity) resolve(lifetime time.Duration) Validity {
	if v.NotBefore.IsZero() {
		v.NotBefore = time.Now().Add(-5 * time.Minute)
	}
	if v.NotAfter.IsZero() {
		v.NotAfter = v.NotBefore.Add(lifetime)
	}
	return v
}

// Pair is a generated certificate with its private key: parsed, and as
// the PEM files esd and esctl read.
type Pair struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte // "CERTIFICATE"
	KeyPEM  []byte // "PRIVATE KEY" (PKCS #8)
}

// CA is a certificate authority that issues server and client
// certificates. Every key is ECDSA P-256: small, fast to sign and to
// verify, and accepted by every TLS stack esd's clients use.
type CA struct {
	Pair
}

// NewCA makes a self-signed CA named commonName.
func NewCA(commonName string, v Validity) (*CA, error) {
	v = v.resolve(CAValidity)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             v.NotBefore,
		NotAfter:              v.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // it signs leaves only
	}
	p, err := issue(tmpl, nil)
	if err != nil {
		return nil, err
	}
	return &CA{Pair: *p}, nil
}

// LoadCA reads a CA written by WriteDev (ca.pem and ca-key.pem).
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s, %s: no PEM block", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s is not the ECDSA key of %s", keyFile, certFile)
	}
	return &CA{Pair{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}}, nil
}

// Server issues a server certificate for hosts (DNS names and IP
// addresses; the first is also its common name).
func (ca *CA) Server(hosts []string, v Validity) (*Pair, error) {
	if len(hosts) == 0 {
		return nil, errors.New("a server certificate needs at least one host")
	}
	v = v.resolve(LeafValidity)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		NotBefore:   v.NotBefore,
		NotAfter:    v.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return issue(tmpl, ca)
}

// Client issues a client certificate whose identity (PeerIdentity) is
// name: its Subject common name.
func (ca *CA) Client(name string, v Validity) (*Pair, error) {
	if name == "" {
		return nil, errors.New("a client certificate needs a name")
	}
	v = v.resolve(LeafValidity)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		NotBefore:   v.NotBefore,
		NotAfter:    v.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(tmpl, ca)
}

// issue signs tmpl with a fresh key, by ca or (nil) by that key itself.
func issue(tmpl *x509.Certificate, ca *CA) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// 128 random bits: serials must be unique per CA, and tests tell a
	// reloaded certificate from the old one by its serial.
	tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("sign %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Pair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}, nil
}

// WriteFiles writes the pair to certFile (0644: a certificate is public)
// and keyFile (0600), each through a temporary file renamed into place,
// so that a reader (esd reloading) never sees half a file.
func (p *Pair) WriteFiles(certFile, keyFile string) error {
	if err := WriteFileAtomic(keyFile, p.KeyPEM, 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(certFile, p.CertPEM, 0o644)
}

// WriteFileAtomic writes data to a temporary file in name's directory
// and renames it to name: the way editors and Kubernetes replace files,
// and the way a watcher sees one event for a whole new file.
func WriteFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort: the error that matters is err
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
