package log

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDocListsKeySpaces: the package documentation (doc.go) lists every
// key space of keys.go, and no other, and every aux namespace of the
// registry (namespaces.go), and no other.
func TestDocListsKeySpaces(t *testing.T) {
	fset := token.NewFileSet()
	keys, err := parser.ParseFile(fset, "keys.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	inCode := make(map[byte]string) // prefix -> constant
	for _, d := range keys.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "byte" || len(vs.Values) != 1 {
				continue
			}
			lit, ok := vs.Values[0].(*ast.BasicLit)
			if !ok || !strings.HasPrefix(vs.Names[0].Name, "k") {
				continue
			}
			v, err := strconv.ParseUint(lit.Value, 0, 8)
			if err != nil {
				t.Fatal(err)
			}
			if other, dup := inCode[byte(v)]; dup {
				t.Errorf("key spaces %s and %s share prefix %#02x", other, vs.Names[0].Name, v)
			}
			inCode[byte(v)] = vs.Names[0].Name
			if c := vs.Comment.Text(); !strings.HasPrefix(c, fmt.Sprintf("0x%02x ", v)) {
				t.Errorf("keys.go: %s = %s, but its comment says %q", vs.Names[0].Name, lit.Value, c)
			}
		}
	}
	if len(inCode) < 10 {
		t.Fatalf("found only %d key spaces in keys.go", len(inCode))
	}

	doc, err := parser.ParseFile(fset, "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	text := doc.Doc.Text()
	start, end := strings.Index(text, "# Key spaces"), strings.Index(text, "# Invariants")
	if start < 0 || end < start {
		t.Fatal("doc.go has no Key spaces section before Invariants")
	}
	spaceLine := regexp.MustCompile(`(?m)^\t0x([0-9a-f]{2}) ([^"]|$)`)
	nsLine := regexp.MustCompile(`(?m)^\t0x09 "([^"]*)"`)
	inDoc := make(map[byte]bool)
	for _, m := range spaceLine.FindAllStringSubmatch(text[start:end], -1) {
		v, _ := strconv.ParseUint(m[1], 16, 8)
		if inDoc[byte(v)] {
			t.Errorf("doc.go lists 0x%s twice", m[1])
		}
		inDoc[byte(v)] = true
	}
	if got, want := slices.Sorted(maps.Keys(inDoc)), slices.Sorted(maps.Keys(inCode)); !slices.Equal(got, want) {
		t.Errorf("doc.go lists key spaces %x; keys.go has %x", got, want)
	}
	var docNS, regNS []string
	for _, m := range nsLine.FindAllStringSubmatch(text[start:end], -1) {
		docNS = append(docNS, m[1])
	}
	for _, ns := range Namespaces() {
		regNS = append(regNS, ns.Prefix())
	}
	slices.Sort(docNS)
	slices.Sort(regNS)
	if !slices.Equal(docNS, regNS) {
		t.Errorf("doc.go lists aux namespaces %q; the registry has %q", docNS, regNS)
	}
}
