// Package auth holds esd's access control: the auth file (roles, identities
// and tokens, which the operator manages and esctl token edits), its
// compiled form (Policy: who a bearer token or a certificate name is, and
// what each identity may do on which streams), and the Authenticator that
// serves the current Policy and reloads it when the file changes.
//
// The file never holds a token's secret, only its SHA-256: a token is
// printed once, when made, and a copy of the file cannot be used to call
// esd.
package auth
