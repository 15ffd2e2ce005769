package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/tlsconf"
	"go.uber.org/zap"
)

// devAuthFileName is the auth file esd makes beside development
// certificates, as esctl certs dev does.
const devAuthFileName = "auth.json"

// Security is on whenever TLS is: a server that encrypts its traffic but
// lets anyone who reaches it delete any stream protects nothing worth
// having. So with TLS every call is authenticated (a bearer token, or the
// verified client certificate's common name) and authorized by an auth
// file. validateSecurity refuses a certificate without one; with
// development certificates and no --auth-file, securityConfig makes a
// development auth file beside them.
func (c config) validateSecurity() []error {
	if c.tlsOn() && c.TLSCert != "" && c.AuthFile == "" {
		return []error{errors.New("--tls-cert turns security on: give --auth-file too (who may do what; " +
			"esctl token create and esctl token identity set write it)")}
	}
	return nil
}

// securityConfig returns c with the development auth file as --auth-file
// when TLS runs on development certificates and no auth file is given:
// it gives the development client certificate (identity admin) every
// permission, and is made at the first start and kept after (an
// operator's edits stay).
func securityConfig(c config, lg *zap.Logger) (config, error) {
	if !c.tlsOn() || c.AuthFile != "" {
		return c, nil
	}
	if c.TLSCert != "" {
		return c, c.validateSecurity()[0] // validate said so already
	}
	path := filepath.Join(c.TLSDevDir, devAuthFileName)
	made, err := auth.EnsureDevFile(path, tlsconf.DefaultDevUser)
	if err != nil {
		return c, fmt.Errorf("development auth file %s: %w", path, err)
	}
	lg.Warn("security with a DEVELOPMENT auth file: the development client certificate may do everything; "+
		"give --auth-file for a real one",
		zap.String("auth_file", path), zap.Bool("made", made), zap.String("identity", tlsconf.DefaultDevUser))
	c.AuthFile = path
	return c, nil
}
