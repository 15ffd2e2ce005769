// Command protoedition writes the edition-2023 rendition of esd's published
// proto3 files, from which the Go code is generated.
//
// The published files (proto/esd/v1) are proto3, so that toolchains older
// than protoc 27, which do not know editions, load them (protoc 3.15 and
// later, for proto3 optional). The Go server, though, must not have string fields
// checked for UTF-8 by the decoder: a proto3 string with invalid UTF-8
// fails to unmarshal (INTERNAL), while esd validates every string itself
// and answers INVALID_ARGUMENT naming the field. Only editions can say
// that (features.utf8_validation = NONE), so the Go code is generated from
// a rendition of the same files:
//
//	syntax = "proto3";     ->  edition = "2023";
//	                           option features.field_presence = IMPLICIT;
//	                           option features.utf8_validation = NONE;
//	optional T x = N;      ->  T x = N [features.field_presence = EXPLICIT];
//	optional T x = N [o];  ->  T x = N [features.field_presence = EXPLICIT, o];
//
// The rendition has the published files' meaning (proto3 presence,
// optional fields with presence, hence the same Go API) apart from the
// UTF-8 check. Anything the rewrite does not recognise is an error rather
// than a silently different rendition.
//
// Usage:
//
//	protoedition -out DIR [-verbatim ROOT]... ROOT...
//
// Each ROOT (a directory relative to the current one) is mirrored under
// DIR: its .proto files rewritten, or copied as they are for a -verbatim
// root (third-party files, whose Go code comes from elsewhere).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

type rootList []string

func (r *rootList) String() string     { return strings.Join(*r, ",") }
func (r *rootList) Set(s string) error { *r = append(*r, s); return nil }

func main() {
	out := flag.String("out", "", "the directory to write the rendition into (mirroring the roots)")
	var verbatim rootList
	flag.Var(&verbatim, "verbatim", "a root whose .proto files are copied unchanged (repeatable)")
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: protoedition -out DIR [-verbatim ROOT]... ROOT...")
		os.Exit(2)
	}
	for _, root := range verbatim {
		if err := mirror(root, *out, func(_ string, b []byte) ([]byte, error) { return b, nil }); err != nil {
			fmt.Fprintln(os.Stderr, "protoedition:", err)
			os.Exit(1)
		}
	}
	for _, root := range flag.Args() {
		if err := mirror(root, *out, func(_ string, b []byte) ([]byte, error) { return Rewrite(b) }); err != nil {
			fmt.Fprintln(os.Stderr, "protoedition:", err)
			os.Exit(1)
		}
	}
}

// mirror writes conv(file) for every .proto file under root to the same
// relative path under out.
func mirror(root, out string, conv func(string, []byte) ([]byte, error)) error {
	if filepath.IsAbs(root) {
		return fmt.Errorf("%s: a root must be relative, to be mirrored under the output directory", root)
	}
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".proto" {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst, err := conv(path, src)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		target := filepath.Join(out, path)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		n++
		return os.WriteFile(target, dst, 0o644)
	})
	if err == nil && n == 0 {
		err = fmt.Errorf("%s: no .proto files", root)
	}
	return err
}

// The only syntax line accepted, and what replaces it.
const (
	syntaxLine  = `syntax = "proto3";`
	editionHead = `edition = "2023";` + "\n\n" +
		"// Generated from the proto3 file of the same name (internal/tools/protoedition):\n" +
		"// proto3 semantics, except that the decoder does not check strings for UTF-8.\n" +
		"option features.field_presence = IMPLICIT;\n" +
		"option features.utf8_validation = NONE;"
	explicit = "features.field_presence = EXPLICIT"
)

var (
	// optional TYPE NAME = NUMBER [OPTIONS]; TRAILING
	optionalField = regexp.MustCompile(`^(\s*)optional\s+([A-Za-z_.][A-Za-z0-9_.]*)\s+([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\d+)\s*(?:\[(.*)\])?\s*;(.*)$`)
	// A line starting a declaration with the word optional.
	optionalWord = regexp.MustCompile(`^\s*optional\b`)
	// Things a proto3 file cannot say, or that the rendition would repeat.
	editionWord = regexp.MustCompile(`^\s*(edition\b|syntax\b|option\s+features\.|.*\bfeatures\.)`)
)

// Rewrite turns one proto3 file into its edition-2023 rendition.
func Rewrite(src []byte) ([]byte, error) {
	lines := strings.Split(string(src), "\n")
	syntaxSeen := false
	for i, line := range lines {
		code, comment := splitComment(line)
		trimmed := strings.TrimSpace(code)
		switch {
		case strings.Contains(code, "/*"):
			// What a block comment hides is not known line by line.
			return nil, fmt.Errorf("line %d: a /* comment: use // comments", i+1)
		case trimmed == "":
			continue
		case trimmed == syntaxLine:
			if syntaxSeen {
				return nil, fmt.Errorf("line %d: a second syntax declaration", i+1)
			}
			if strings.TrimSpace(comment) != "" {
				return nil, fmt.Errorf("line %d: a comment after the syntax declaration (put it on a line of its own)", i+1)
			}
			syntaxSeen = true
			lines[i] = editionHead
		case !syntaxSeen:
			return nil, fmt.Errorf("line %d: %q before %s (only comments may come first)", i+1, trimmed, syntaxLine)
		case editionWord.MatchString(code):
			return nil, fmt.Errorf("line %d: %q: a proto3 file has no syntax, edition or features declarations past the first line", i+1, trimmed)
		case optionalWord.MatchString(code):
			m := optionalField.FindStringSubmatch(code)
			if m == nil {
				return nil, fmt.Errorf("line %d: %q: an optional field must be declared on one line as `optional TYPE NAME = NUMBER [OPTIONS];`", i+1, trimmed)
			}
			indent, typ, name, num, opts, rest := m[1], m[2], m[3], m[4], strings.TrimSpace(m[5]), m[6]
			if strings.TrimSpace(rest) != "" {
				return nil, fmt.Errorf("line %d: %q: code after the optional field's semicolon", i+1, trimmed)
			}
			if opts != "" {
				opts = explicit + ", " + opts
			} else {
				opts = explicit
			}
			lines[i] = fmt.Sprintf("%s%s %s = %s [%s];%s", indent, typ, name, num, opts, comment)
		}
	}
	if !syntaxSeen {
		return nil, errors.New(`no syntax = "proto3"; declaration`)
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// splitComment splits a line at a // comment that is not inside a string
// literal; the comment part keeps its leading whitespace.
func splitComment(line string) (code, comment string) {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == '\\':
			i++ // the escaped character cannot end the string
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '"' || c == '\'':
			quote = c
		case c == '/' && i+1 < len(line) && line[i+1] == '/':
			j := i
			for j > 0 && (line[j-1] == ' ' || line[j-1] == '\t') {
				j--
			}
			return line[:j], line[j:]
		}
	}
	return line, ""
}
