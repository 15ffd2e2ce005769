package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"time"
)

// A token is "esd_<id>_<secret>": id, 8 random bytes in hex, names the
// token in the file (esctl token ls/revoke) and finds it without trying
// every hash; secret, 32 random bytes in unpadded base64url, is the part
// only its holder knows.
const (
	tokenPrefix     = "esd_"
	tokenIDBytes    = 8
	tokenSecretLen  = 32
	tokenSecretText = 43 // base64.RawURLEncoding of 32 bytes
)

// NewToken makes a token for identity, valid until expires (zero: no
// expiry), adds it to f and returns the token text, which is not stored.
func NewToken(f *File, identity string, now time.Time, expires time.Time) (string, Token, error) {
	var id [tokenIDBytes]byte
	var secret [tokenSecretLen]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Token{}, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", Token{}, err
	}
	sum := sha256.Sum256(secret[:])
	t := Token{ID: hex.EncodeToString(id[:]), Identity: identity, SHA256: hex.EncodeToString(sum[:]), Created: now.UTC().Truncate(time.Second)}
	if !expires.IsZero() {
		e := expires.UTC().Truncate(time.Second)
		t.Expires = &e
	}
	f.Tokens = append(f.Tokens, t)
	return tokenPrefix + t.ID + "_" + base64.RawURLEncoding.EncodeToString(secret[:]), t, nil
}

// Revoke removes the token id from f; false: there is none.
func Revoke(f *File, id string) bool {
	for i, t := range f.Tokens {
		if t.ID == id {
			f.Tokens = append(f.Tokens[:i], f.Tokens[i+1:]...)
			return true
		}
	}
	return false
}

// parseToken splits a token into its id and the SHA-256 of its secret.
func parseToken(tok string) (id string, sum [32]byte, ok bool) {
	rest, found := strings.CutPrefix(tok, tokenPrefix)
	if !found || len(rest) != tokenIDBytes*2+1+tokenSecretText || rest[tokenIDBytes*2] != '_' {
		return "", sum, false
	}
	id = rest[:tokenIDBytes*2]
	secret, err := base64.RawURLEncoding.DecodeString(rest[tokenIDBytes*2+1:])
	if err != nil || len(secret) != tokenSecretLen || !validTokenID(id) {
		return "", sum, false
	}
	return id, sha256.Sum256(secret), true
}

func validTokenID(id string) bool {
	if len(id) != tokenIDBytes*2 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
