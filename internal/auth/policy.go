package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"sort"
	"strings"
	"time"
)

// Authentication failures. Their text is what a caller is told: none says
// whether an identity or a token id exists.
var (
	ErrTokenMissing       = errors.New("no credentials: send 'authorization: Bearer <token>' or a client certificate")
	ErrTokenInvalid       = errors.New("invalid token")
	ErrTokenExpired       = errors.New("token expired")
	ErrCertificateUnknown = errors.New("client certificate not allowed")
)

// Policy is an auth file compiled for lookups; it never changes (a reload
// makes a new one).
type Policy struct {
	tokens     map[string]compiledToken
	identities map[string]*Principal
}

type compiledToken struct {
	sum     [32]byte
	who     *Principal
	expires time.Time // zero: never
}

// Principal is an authenticated caller and what it may do.
type Principal struct {
	Name string
	// prefixes[perm]: the stream prefixes granted, sorted, none a prefix
	// of another; [""] when the permission covers every stream.
	prefixes map[Permission][]string
	// PerSecond and Burst bound the calls the identity may start (a token
	// bucket per identity); PerSecond 0: no bound.
	PerSecond float64
	Burst     float64
}

// Compile builds the Policy of a checked file.
func Compile(f *File) *Policy {
	p := &Policy{tokens: make(map[string]compiledToken, len(f.Tokens)), identities: make(map[string]*Principal, len(f.Identities))}
	for name, id := range f.Identities {
		sets := make(map[Permission]map[string]bool)
		for _, r := range id.Roles {
			for _, g := range f.Roles[r] {
				prefix := g.Prefix
				if prefix == AllStreams {
					prefix = ""
				}
				for _, perm := range g.Permissions {
					if sets[perm] == nil {
						sets[perm] = make(map[string]bool)
					}
					sets[perm][prefix] = true
				}
			}
		}
		pr := &Principal{Name: name, prefixes: make(map[Permission][]string, len(sets))}
		if rt := id.Rate; rt != nil {
			pr.PerSecond, pr.Burst = rt.PerSecond, float64(rt.Burst)
			if pr.Burst == 0 {
				pr.Burst = max(1, rt.PerSecond)
			}
		}
		for perm, set := range sets {
			pr.prefixes[perm] = minimalPrefixes(set)
		}
		p.identities[name] = pr
	}
	for _, t := range f.Tokens {
		ct := compiledToken{who: p.identities[t.Identity]}
		h, _ := hex.DecodeString(t.SHA256) // checked by File.Check
		copy(ct.sum[:], h)
		if t.Expires != nil {
			ct.expires = *t.Expires
		}
		p.tokens[t.ID] = ct
	}
	return p
}

// minimalPrefixes sorts the prefixes and drops those another one covers:
// the rest are disjoint, so each stream name matches at most one, and in
// sorted order the streams of one all sort before those of the next.
func minimalPrefixes(set map[string]bool) []string {
	all := make([]string, 0, len(set))
	for p := range set {
		all = append(all, p)
	}
	sort.Strings(all)
	out := all[:0]
	for _, p := range all {
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue // sorted: a covering prefix comes right before
		}
		out = append(out, p)
	}
	return out
}

// dummySum is compared against when a token id is unknown, so that an
// unknown id costs what a wrong secret does.
var dummySum = sha256.Sum256([]byte("esd"))

// Authenticate returns the caller a bearer token belongs to at now. The
// secret's hash is compared in constant time, and expiry is told only to
// the holder of the right secret.
func (p *Policy) Authenticate(token string, now time.Time) (*Principal, error) {
	id, sum, ok := parseToken(token)
	if !ok {
		return nil, ErrTokenInvalid
	}
	ct, found := p.tokens[id]
	want := ct.sum
	if !found {
		want = dummySum
	}
	if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !found || ct.who == nil {
		return nil, ErrTokenInvalid
	}
	if !ct.expires.IsZero() && !now.Before(ct.expires) {
		return nil, ErrTokenExpired
	}
	return ct.who, nil
}

// Certificate returns the caller named by a verified client certificate's
// Subject Common Name.
func (p *Policy) Certificate(commonName string) (*Principal, error) {
	if who, ok := p.identities[commonName]; ok && commonName != "" {
		return who, nil
	}
	return nil, ErrCertificateUnknown
}

// Allowed reports whether the caller may perm on stream.
func (pr *Principal) Allowed(perm Permission, stream string) bool {
	for _, p := range pr.prefixes[perm] {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

// CoversPrefix reports whether the caller may perm on every stream whose
// name starts with prefix ("" : every stream).
func (pr *Principal) CoversPrefix(perm Permission, prefix string) bool {
	return pr.Allowed(perm, prefix) // a grant covers the prefix iff it is a prefix of it
}

// CoversCategory reports whether the caller may perm on every stream of
// category cat: the stream cat itself and those named "cat-...".
func (pr *Principal) CoversCategory(perm Permission, cat string) bool {
	return pr.Allowed(perm, cat) && pr.CoversPrefix(perm, cat+"-")
}

// Everything reports whether perm is granted on every stream ("*").
func (pr *Principal) Everything(perm Permission) bool {
	return pr.Allowed(perm, "")
}

// Any reports whether perm is granted on some streams.
func (pr *Principal) Any(perm Permission) bool { return len(pr.prefixes[perm]) > 0 }

// Prefixes returns the prefixes perm is granted on: sorted, disjoint
// (none is a prefix of another); [""] for every stream. The slice is
// shared: do not change it.
func (pr *Principal) Prefixes(perm Permission) []string { return pr.prefixes[perm] }
