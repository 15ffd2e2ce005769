package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRewrite(t *testing.T) {
	head := editionHead
	cases := []struct {
		name    string
		src     string
		want    string // empty: an error is wanted
		wantErr string // a part of the error message
	}{
		{
			name: "syntax becomes the edition and its two options",
			src:  "syntax = \"proto3\";\n\npackage esd.v1;\n",
			want: head + "\n\npackage esd.v1;\n",
		},
		{
			name: "comments before the syntax line stay",
			src:  "// Copyright.\n\nsyntax = \"proto3\";\n",
			want: "// Copyright.\n\n" + head + "\n",
		},
		{
			name: "optional becomes explicit presence, keeping indent and trailing comment",
			src:  "syntax = \"proto3\";\nmessage M {\n  optional uint64 from_revision = 2; // unset: the start\n}\n",
			want: head + "\nmessage M {\n  uint64 from_revision = 2 [features.field_presence = EXPLICIT]; // unset: the start\n}\n",
		},
		{
			name: "options of an optional field are kept after the feature",
			src:  "syntax = \"proto3\";\nmessage M {\n\toptional  esd.v1.Filter f=3 [deprecated = true] ;\n}",
			want: head + "\nmessage M {\n\tesd.v1.Filter f = 3 [features.field_presence = EXPLICIT, deprecated = true];\n}",
		},
		{
			name: "plain, repeated and oneof fields are left alone",
			src:  "syntax = \"proto3\";\nmessage M {\n  string a = 1;\n  repeated string optional_tags = 2;\n  oneof k { uint64 exact = 3; }\n}\n",
			want: head + "\nmessage M {\n  string a = 1;\n  repeated string optional_tags = 2;\n  oneof k { uint64 exact = 3; }\n}\n",
		},
		{
			name: "optional in a comment is not a field",
			src:  "syntax = \"proto3\";\n// optional fields have presence\n  // optional uint64 x = 1;\n",
			want: head + "\n// optional fields have presence\n  // optional uint64 x = 1;\n",
		},
		{
			name: "// inside a string literal is not a comment",
			src:  "syntax = \"proto3\";\noption go_package = \"example.com/a//b\";\n",
			want: head + "\noption go_package = \"example.com/a//b\";\n",
		},
		{name: "no syntax line", src: "package esd.v1;\n", wantErr: "before"},
		{name: "empty file", src: "", wantErr: "no syntax"},
		{name: "proto2", src: "syntax = \"proto2\";\n", wantErr: "before"},
		{name: "already an edition", src: "edition = \"2023\";\n", wantErr: "before"},
		{name: "two syntax lines", src: "syntax = \"proto3\";\nsyntax = \"proto3\";\n", wantErr: "second syntax"},
		{name: "a features option", src: "syntax = \"proto3\";\noption features.utf8_validation = NONE;\n", wantErr: "features"},
		{name: "a field feature", src: "syntax = \"proto3\";\nmessage M { string a = 1 [features.utf8_validation = NONE]; }\n", wantErr: "features"},
		{name: "an optional field over two lines", src: "syntax = \"proto3\";\nmessage M {\n  optional uint64 x\n    = 1;\n}\n", wantErr: "on one line"},
		{name: "code after an optional field", src: "syntax = \"proto3\";\nmessage M {\n  optional uint64 x = 1; string y = 2;\n}\n", wantErr: "after the optional"},
		{name: "a block comment", src: "syntax = \"proto3\";\n/* optional uint64 x = 1; */\n", wantErr: "/*"},
		{name: "a comment on the syntax line", src: "syntax = \"proto3\"; // why\n", wantErr: "comment after"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Rewrite([]byte(tc.src))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Rewrite(%q): want an error containing %q, got %v and\n%s", tc.src, tc.wantErr, err, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Rewrite(%q): %v", tc.src, err)
			}
			if string(got) != tc.want {
				t.Errorf("Rewrite(%q):\ngot:\n%s\nwant:\n%s", tc.src, got, tc.want)
			}
		})
	}
}

// TestRewritePublished renders the repository's published protos: each
// must be accepted, and its rendition must keep every field declaration
// line but the syntax line and the optional ones.
func TestRewritePublished(t *testing.T) {
	root := filepath.Join("..", "..", "..", "proto")
	files, err := filepath.Glob(filepath.Join(root, "esd", "v1", "*.proto"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no published protos under %s: %v", root, err)
	}
	optionals := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Rewrite(src)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		out := string(got)
		if !strings.HasPrefix(strings.TrimLeft(out, "\n"), `edition = "2023";`) && !strings.Contains(out, "\n"+`edition = "2023";`) {
			t.Errorf("%s: the rendition has no edition line", f)
		}
		for _, line := range strings.Split(out, "\n") {
			if code, _ := splitComment(line); optionalWord.MatchString(code) || strings.TrimSpace(code) == syntaxLine {
				t.Errorf("%s: the rendition still has %q", f, line)
			}
		}
		optionals += strings.Count(out, explicit+"]")
		if n, m := strings.Count(string(src), "\n"), strings.Count(out, "\n"); m != n+5 {
			t.Errorf("%s: the rendition has %d lines, want the %d of the source plus the 5 of the edition header", f, m, n)
		}
	}
	// stream_service.proto: conflict_delta_events, from_revision, from_position.
	if optionals < 3 {
		t.Errorf("the published protos have %d optional fields rendered with explicit presence, want at least 3", optionals)
	}
}
