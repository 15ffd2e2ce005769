package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/tlsconf"
)

func (a *app) newCertsCmd() *cobra.Command {
	cmd := a.groupCmd("certs", "Make TLS certificates")
	var (
		out     string
		hosts   []string
		clients []string
		force   bool
	)
	dev := &cobra.Command{
		Use:   "dev --out DIR",
		Short: "Make a development CA, a server certificate and client certificates",
		Long: `Make certificates for trying esd with TLS and mTLS on one machine or a
test network: a CA (ca.pem, ca-key.pem), a server certificate for --hosts
(server.pem, server-key.pem) and a client certificate for each --client
NAME (NAME.pem, NAME-key.pem; its common name NAME is the identity esd
sees). ECDSA P-256; leaves valid for a year, the CA for ten; keys 0600.
With them, unless it exists, auth.json: an auth file (esd --auth-file)
that gives each of these clients every permission on every stream.

They are not for production: the CA's key lies beside the certificates,
and anyone who can read it can make certificates that esd accepts.`,
		Example: `  esctl certs dev --out ./tls
  esctl certs dev --out ./tls --hosts localhost,127.0.0.1,esd.test --client admin --client app`,
		Args: cobra.NoArgs,
		RunE: a.action(func(*cobra.Command, []string) error {
			if out == "" {
				return usagef("--out DIR is required")
			}
			if len(clients) == 0 {
				clients = []string{tlsconf.DefaultDevUser}
			}
			ca := tlsconf.DevPaths(out, nil).CA
			if _, err := os.Stat(ca); !errors.Is(err, fs.ErrNotExist) && !force {
				return usagef("%s exists: certificates from it would no longer verify against a new CA (--force to replace it)", ca)
			}
			names := slices.Compact(slices.Sorted(slices.Values(clients)))
			files, err := tlsconf.WriteDev(out, hosts, names, tlsconf.Validity{})
			if err != nil {
				return err
			}
			// With TLS, esd wants an auth file too (security is on): one
			// that gives these clients everything, unless one is there.
			authFile := filepath.Join(out, devAuthFile)
			if _, err := auth.EnsureDevFile(authFile, names...); err != nil {
				return err
			}
			return a.printDevFiles(files, authFile, hosts, clients[0])
		}),
	}
	f := dev.Flags()
	f.StringVar(&out, "out", "", "directory to write the files to (made if missing)")
	f.StringSliceVar(&hosts, "hosts", tlsconf.DefaultDevHosts, "names and IP addresses the server certificate is valid for")
	f.StringArrayVar(&clients, "client", nil, "make a client certificate NAME.pem for NAME (repeatable; default admin)")
	f.BoolVar(&force, "force", false, "replace the files of a CA already in --out")
	cmd.AddCommand(dev)
	return cmd
}

// devAuthFile is the auth file certs dev writes beside the certificates
// (esd --tls-dev-dir makes the same).
const devAuthFile = "auth.json"

func (a *app) printDevFiles(files tlsconf.DevFiles, authFile string, hosts []string, client string) error {
	w := a.stdout
	fmt.Fprintf(w, "CA:       %s (key %s)\n", files.CA, files.CAKey)
	fmt.Fprintf(w, "server:   %s (key %s), for %s\n", files.ServerCert, files.ServerKey, strings.Join(hosts, ", "))
	names := make([]string, 0, len(files.Clients))
	for n := range files.Clients {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "client:   %s (key %s), identity %q\n", files.Clients[n][0], files.Clients[n][1], n)
	}
	c := files.Clients[client]
	fmt.Fprintf(w, "auth:     %s, every permission for the clients above\n", authFile)
	fmt.Fprintf(w, "\nStart esd with TLS, requiring client certificates of this CA:\n")
	fmt.Fprintf(w, "  esd --tls-cert %s --tls-key %s --tls-client-ca %s --auth-file %s\n", files.ServerCert, files.ServerKey, files.CA, authFile)
	fmt.Fprintf(w, "Connect with esctl:\n")
	fmt.Fprintf(w, "  esctl --tls-ca %s --tls-cert %s --tls-key %s server info\n", files.CA, c[0], c[1])
	fmt.Fprintf(w, "or export ESCTL_TLS_CA=%s ESCTL_TLS_CERT=%s ESCTL_TLS_KEY=%s\n", files.CA, c[0], c[1])
	fmt.Fprintf(w, "These are development certificates: keep %s out of production.\n", files.CAKey)
	return nil
}
