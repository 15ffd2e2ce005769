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
	"bufio"
	"io"
	"io/fs"
	"os"
	"path"
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

// TestModuleZips zips the files a published version holds: every file of
// the working tree but the version control's own and what .gitignore keeps
// out of the repository.
func TestModuleZips(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if got := modfile.ModulePath(gomod); got != modulePath {
		t.Fatalf("%s/go.mod is module %q, want %q", root, got, modulePath)
	}
	ignored := readGitignore(t)
	var files []modzip.File
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.Name() == ".git": // the repository (a worktree has a file)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case ignored(rel, d.IsDir()):
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case d.Name() == ".gitignore" && rel != ".gitignore":
			t.Fatalf("%s: readGitignore reads only the root's .gitignore", rel)
		case d.IsDir():
			return nil
		}
		files = append(files, file{path: rel, osPath: p})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

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

// readGitignore reads the root's .gitignore, which holds patterns of three
// forms only (the test fails on any other, so that it never zips what the
// repository does not hold): "/name" (a file or directory at the root),
// "/name/" (a directory at the root) and "glob" (a file or directory
// anywhere whose name matches, as "*.test"). It returns whether a path is
// ignored.
func readGitignore(t *testing.T) func(rel string, isDir bool) bool {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type pattern struct {
		glob     string
		anchored bool // at the root only
		dirOnly  bool
	}
	var patterns []pattern
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := pattern{glob: line}
		p.glob, p.dirOnly = strings.CutSuffix(p.glob, "/")
		p.glob, p.anchored = strings.CutPrefix(p.glob, "/")
		if _, err := path.Match(p.glob, ""); err != nil || p.glob == "" ||
			strings.ContainsAny(p.glob, `/\!`) || strings.Contains(p.glob, "**") {
			t.Fatalf(".gitignore: pattern %q is not of a form this test knows", line)
		}
		patterns = append(patterns, p)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return func(rel string, isDir bool) bool {
		depth := strings.Count(rel, "/")
		name := path.Base(rel)
		for _, p := range patterns {
			if (p.anchored && depth > 0) || (p.dirOnly && !isDir) {
				continue
			}
			if ok, _ := path.Match(p.glob, name); ok {
				return true
			}
		}
		return false
	}
}
