package auth

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Permission is what a grant allows on the streams of its prefix.
type Permission string

// The permissions, as the auth file spells them.
const (
	Read      Permission = "read"      // read events and stream facts (ReadStream, GetStream, snapshots' reads)
	Append    Permission = "append"    // append events, save snapshots
	Delete    Permission = "delete"    // delete streams and snapshots
	Subscribe Permission = "subscribe" // subscribe, join consumer groups
	Admin     Permission = "admin"     // server-wide operations (AdminService, consumer group and snapshot policy management)
)

// Permissions lists every permission, in the order docs/api.md gives them.
var Permissions = []Permission{Read, Append, Delete, Subscribe, Admin}

// AllStreams is the grant prefix that covers every stream, "$" system
// streams included.
const AllStreams = "*"

// File is the auth file as stored (JSON).
type File struct {
	// Roles maps a role name to its grants.
	Roles map[string][]Grant `json:"roles"`
	// Identities maps an identity name (a token holder, or the Subject
	// Common Name of an mTLS client certificate) to its roles.
	Identities map[string]Identity `json:"identities"`
	Tokens     []Token             `json:"tokens"`
}

// Grant allows permissions on the streams whose names start with Prefix
// ("*": every stream).
type Grant struct {
	Prefix      string       `json:"prefix"`
	Permissions []Permission `json:"permissions"`
}

// Identity is who a caller is once authenticated.
type Identity struct {
	Roles []string `json:"roles"`
	// Rate, when set, bounds the calls the identity may start.
	Rate *Rate `json:"rate,omitempty"`
}

// Rate is a token bucket: PerSecond calls a second on average, up to Burst
// at once (0: PerSecond, at least 1).
type Rate struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst,omitempty"`
}

// Token is a bearer token as stored: its secret only as a SHA-256.
type Token struct {
	ID       string     `json:"id"`
	Identity string     `json:"identity"`
	SHA256   string     `json:"sha256"` // hex of SHA-256(secret)
	Created  time.Time  `json:"created"`
	Expires  *time.Time `json:"expires,omitempty"`
}

// maxFileBytes bounds what Decode reads: an auth file is hand-sized.
const maxFileBytes = 16 << 20

// Decode parses and checks an auth file; unknown fields are errors (a
// misspelt field name must not silently grant nothing or everything).
func Decode(r io.Reader) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("auth file larger than %d bytes", maxFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("auth file: data after the JSON object")
	}
	if err := f.Check(); err != nil {
		return nil, err
	}
	return &f, nil
}

// ReadFile reads and checks the auth file at path.
func ReadFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close() //nolint:errcheck // read only
	f, err := Decode(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Check reports every inconsistency of f: a role that grants an unknown
// permission or has a bad prefix, an identity with an undefined role, a
// token of an undefined identity, a bad hash, a repeated token id.
func (f *File) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, name := range sortedKeys(f.Roles) {
		if name == "" {
			bad("role with an empty name")
		}
		for i, g := range f.Roles[name] {
			switch {
			case g.Prefix == "":
				bad("role %q grant %d: empty prefix (use %q for every stream)", name, i, AllStreams)
			case g.Prefix != AllStreams && strings.Contains(g.Prefix, "*"):
				bad("role %q grant %d: prefix %q: '*' is only valid alone (every stream); prefixes match literally", name, i, g.Prefix)
			}
			if len(g.Permissions) == 0 {
				bad("role %q grant %d: no permissions", name, i)
			}
			for _, p := range g.Permissions {
				switch {
				case !validPermission(p):
					bad("role %q grant %d: unknown permission %q (want read, append, delete, subscribe or admin)", name, i, p)
				case p == Admin && g.Prefix != AllStreams:
					// admin is server-wide: a prefix would suggest a limit it does not have.
					bad("role %q grant %d: admin is server-wide, grant it on prefix %q", name, i, AllStreams)
				}
			}
		}
	}
	for _, name := range sortedKeys(f.Identities) {
		if name == "" {
			bad("identity with an empty name")
		}
		for _, r := range f.Identities[name].Roles {
			if _, ok := f.Roles[r]; !ok {
				bad("identity %q: undefined role %q", name, r)
			}
		}
		if rt := f.Identities[name].Rate; rt != nil && (!(rt.PerSecond > 0 && rt.PerSecond <= 1e9) || rt.Burst < 0 || rt.Burst > 1e9) {
			bad("identity %q: rate: per_second must be over 0 (at most 1e9), burst 0 to 1e9", name)
		}
	}
	seen := make(map[string]bool, len(f.Tokens))
	for i, t := range f.Tokens {
		switch {
		case !validTokenID(t.ID):
			bad("token %d: id %q is not %d hex digits", i, t.ID, tokenIDBytes*2)
		case seen[t.ID]:
			bad("token %s: id repeated", t.ID)
		}
		seen[t.ID] = true
		if _, ok := f.Identities[t.Identity]; !ok {
			bad("token %s: undefined identity %q", t.ID, t.Identity)
		}
		if h, err := hex.DecodeString(t.SHA256); err != nil || len(h) != 32 {
			bad("token %s: sha256 is not 64 hex digits", t.ID)
		}
	}
	return errors.Join(errs...)
}

func validPermission(p Permission) bool {
	for _, q := range Permissions {
		if p == q {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WriteFile stores f at path atomically: a temporary file in the same
// directory (mode 0600: the file says who may do what), synced, then
// renamed over path, so that esd's reload never reads half a file.
func WriteFile(path string, f *File) error {
	if err := f.Check(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadOrEmpty reads the auth file at path, or returns an empty one if it
// does not exist yet (esctl token create makes it).
func LoadOrEmpty(path string) (*File, error) {
	f, err := ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &File{Roles: map[string][]Grant{}, Identities: map[string]Identity{}}, nil
	}
	return f, err
}

// DevRole is the role of a development auth file: every permission on
// every stream.
const DevRole = "dev-all"

// DevFile is an auth file for trying esd with development certificates:
// each of identities (the common names of the development client
// certificates) holds DevRole. Not for production: it gives whoever holds
// one of those certificates everything.
func DevFile(identities ...string) *File {
	f := &File{
		Roles:      map[string][]Grant{DevRole: {{Prefix: AllStreams, Permissions: Permissions}}},
		Identities: map[string]Identity{},
	}
	for _, id := range identities {
		f.Identities[id] = Identity{Roles: []string{DevRole}}
	}
	return f
}

// EnsureDevFile writes DevFile(identities...) at path unless a file is
// there already (an operator's edits are kept), and says whether it did.
func EnsureDevFile(path string, identities ...string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, WriteFile(path, DevFile(identities...))
}
