package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/esdhq/esd/client"
)

// tlsFlags are esctl's global TLS flags. Their environment variables are
// ESCTL_TLS_*, not ESD_TLS_*: esd reads ESD_TLS_CERT and ESD_TLS_KEY as
// its server certificate, and esctl run beside it (a container's health
// check) must not take that for its client certificate.
type tlsFlags struct {
	on         bool
	ca         string
	cert, key  string
	serverName string
}

// tlsEnv maps each flag to its environment variable.
var tlsEnv = [][2]string{
	{"tls", "ESCTL_TLS"},
	{"tls-ca", "ESCTL_TLS_CA"},
	{"tls-cert", "ESCTL_TLS_CERT"},
	{"tls-key", "ESCTL_TLS_KEY"},
	{"tls-server-name", "ESCTL_TLS_SERVER_NAME"},
}

func (t *tlsFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&t.on, "tls", false, "connect with TLS, trusting the system's CAs (implied by --tls-ca and --tls-cert; env ESCTL_TLS)")
	f.StringVar(&t.ca, "tls-ca", "", "connect with TLS, trusting the CAs of this PEM bundle (env ESCTL_TLS_CA)")
	f.StringVar(&t.cert, "tls-cert", "", "PEM client certificate, for a server that asks for one (mTLS; env ESCTL_TLS_CERT)")
	f.StringVar(&t.key, "tls-key", "", "PEM private key of --tls-cert (env ESCTL_TLS_KEY)")
	f.StringVar(&t.serverName, "tls-server-name", "", "name the server's certificate must be valid for (default: the host of --addr; env ESCTL_TLS_SERVER_NAME)")
}

// fromEnv fills the flags not given on the command line from the
// environment.
func (t *tlsFlags) fromEnv(cmd *cobra.Command, lookupEnv func(string) (string, bool)) error {
	for _, fe := range tlsEnv {
		if cmd.Flags().Changed(fe[0]) {
			continue
		}
		if v, ok := lookupEnv(fe[1]); ok && v != "" {
			if err := cmd.Flags().Set(fe[0], v); err != nil {
				return usagef("%s=%q: %v", fe[1], v, err)
			}
		}
	}
	if (t.cert == "") != (t.key == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	return nil
}

// enabled reports whether any TLS flag asks for TLS.
func (t *tlsFlags) enabled() bool {
	return t.on || t.ca != "" || t.cert != "" || t.serverName != ""
}

// option returns the client option of the TLS flags: TLS when any of
// them says so, plain text otherwise (nil).
func (t *tlsFlags) option() client.Option {
	if !t.enabled() {
		return nil
	}
	return client.WithTLSFiles(t.ca, t.cert, t.key, t.serverName)
}

// hint says which TLS flag may be missing when a connection failed with
// msg: a server that serves TLS closes a plain-text connection, and one
// that requires client certificates closes a connection without one,
// each with no more explanation than a broken connection.
func (t *tlsFlags) hint(msg string) string {
	switch {
	case strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host"):
		return "" // nothing listens there: no TLS flag changes that
	case !t.enabled():
		return "if esd serves TLS, connect with --tls-ca (and --tls-cert, --tls-key if it asks for client certificates)"
	case t.cert == "":
		return "if esd requires client certificates (mTLS), give --tls-cert and --tls-key"
	}
	return ""
}
