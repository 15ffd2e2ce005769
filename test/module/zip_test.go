// Package module checks the repository against the Go tool's rules for
// module zip files.
//
// `go install github.com/esdhq/esd/cmd/esd@v1.2.3` downloads the module
// zip of that version, which the module proxy makes from the repository
// by the rules of golang.org/x/mod/zip. A single file those rules refuse
// (a name reserved on Windows such as aux.go, two names equal but for
// case, a go.mod in a subdirectory, ...) makes the whole version
// impossible to zip, so nobody can install it — and go build, go vet and
// go test never notice: it happened once with internal/log/aux.go. This
// test zips the working tree by the same rules, so the next one fails here.
package module

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

const modulePath = "github.com/esdhq/esd"

// root is the repository's root, seen from this package's directory.
const root = "../.."

// TestModuleZips zips the files a published version holds: the
// repository's (repositoryFiles).
func TestModuleZips(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if got := modfile.ModulePath(gomod); got != modulePath {
		t.Fatalf("%s/go.mod is module %q, want %q", root, got, modulePath)
	}
	files := repositoryFiles(t)
	cf, err := modzip.CheckFiles(files)
	for _, fe := range cf.Invalid {
		t.Errorf("%s cannot be in a module zip: %v", fe.Path, fe.Err)
	}
	// Nothing is left out of the zip on purpose (nested modules, vendor
	// directories, symbolic links): a file that is silently left out is
	// missing from every published version.
	for _, fe := range cf.Omitted {
		t.Errorf("%s would be left out of the module zip: %v", fe.Path, fe.Err)
	}
	if cf.SizeError != nil {
		t.Error(cf.SizeError)
	}
	if err != nil && !t.Failed() {
		t.Errorf("the module cannot be zipped: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if len(cf.Valid) < 100 {
		t.Fatalf("only %d files to zip: is %s the repository's root?", len(cf.Valid), root)
	}

	// And make the zip, as the proxy does (the pseudo-version is any valid one).
	v := module.Version{Path: modulePath, Version: "v0.0.0-20260101000000-000000000000"}
	if err := modzip.Create(io.Discard, v, files); err != nil {
		t.Fatalf("zip %s: %v", v, err)
	}
}

// file is a file of the working tree, as modzip reads it.
type file struct{ path, osPath string }

func (f file) Path() string                 { return f.path }
func (f file) Lstat() (os.FileInfo, error)  { return os.Lstat(f.osPath) }
func (f file) Open() (io.ReadCloser, error) { return os.Open(f.osPath) }

// repositoryFiles lists the files a published version holds: those git
// tracks, and those it would track once added (untracked and not
// ignored), so that a new file fails here before it is committed.
func repositoryFiles(t *testing.T) []modzip.File {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the repository's files cannot be listed")
	}
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var files []modzip.File
	for _, rel := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree, not yet in the index
		}
		files = append(files, file{path: rel, osPath: p})
	}
	return files
}
