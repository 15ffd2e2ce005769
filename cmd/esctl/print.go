package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Output formats of -o.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatJSONL = "jsonl"
)

// protojsonOpts keeps fields at their zero value: revision 0 and position
// 0 are values a script reads, not absences. (EmitDefaultValues rather
// than EmitUnpopulated: an unset message, such as a stream's created time
// before its first event, stays out instead of printing null.)
var protojsonOpts = protojson.MarshalOptions{EmitDefaultValues: true}

// dataWidth is how much of an event's data a table shows.
const dataWidth = 60

// tableFlushRows bounds what a table buffers: alignment holds within blocks
// of this many rows, and a long read does not sit in memory.
const tableFlushRows = 1000

func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// printKV prints a single result: KEY VALUE lines in table mode, the
// message m in json and jsonl.
func (a *app) printKV(m proto.Message, rows [][2]string) error {
	if a.output != formatTable {
		return a.writeJSON(m)
	}
	tw := newTabWriter(a.stdout)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// writeJSON prints one message in the json or jsonl format.
func (a *app) writeJSON(m proto.Message) error {
	b, err := marshalJSON(m, a.output == formatJSON)
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(append(b, '\n'))
	return err
}

// marshalJSON encodes m with protojson, indented or on one line, with the
// data of events and snapshots that is a JSON object or array embedded as
// JSON (see embedJSONData). protojson varies its whitespace on purpose (so
// nobody relies on it); esctl re-formats with encoding/json so its output
// is stable for people and diffs.
func marshalJSON(m proto.Message, indent bool) ([]byte, error) {
	b, err := protojsonOpts.Marshal(m)
	if err != nil {
		return nil, err
	}
	if b, err = embedJSONData(b); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if indent {
		err = json.Indent(&buf, b, "", "  ")
	} else {
		err = json.Compact(&buf, b)
	}
	return buf.Bytes(), err
}

// recordWriter prints a sequence of messages: table rows, one JSON array
// (json) or one object a line (jsonl). It writes as records come, so a long
// read needs no memory for what was printed.
type recordWriter[T proto.Message] struct {
	format string
	w      io.Writer
	header []string
	row    func(T) []string
	tw     *tabwriter.Writer
	n      int
}

func newRecordWriter[T proto.Message](a *app, header []string, row func(T) []string) *recordWriter[T] {
	return &recordWriter[T]{format: a.output, w: a.stdout, header: header, row: row}
}

func (r *recordWriter[T]) add(m T) error {
	r.n++
	switch r.format {
	case formatTable:
		r.startTable()
		fmt.Fprintln(r.tw, strings.Join(r.row(m), "\t"))
		if r.n%tableFlushRows == 0 {
			return r.tw.Flush()
		}
		return nil
	case formatJSON:
		sep := ",\n"
		if r.n == 1 {
			sep = "[\n"
		}
		return r.writeLine(sep, m)
	default:
		return r.writeLine("", m)
	}
}

// startTable makes the tabwriter and writes the header, once.
func (r *recordWriter[T]) startTable() {
	if r.tw == nil {
		r.tw = newTabWriter(r.w)
		fmt.Fprintln(r.tw, strings.Join(r.header, "\t"))
	}
}

func (r *recordWriter[T]) writeLine(prefix string, m T) error {
	b, err := marshalJSON(m, false)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(prefix)+len(b)+1)
	buf = append(append(buf, prefix...), b...)
	if r.format == formatJSONL {
		buf = append(buf, '\n')
	}
	_, err = r.w.Write(buf)
	return err
}

// abort ends the output after a failure: what was printed is finished
// (last table block, closing bracket) but an empty result prints nothing,
// so an error alone does not look like an empty answer.
func (r *recordWriter[T]) abort() {
	if r.n > 0 {
		_ = r.close() // the failure that made us stop is what gets reported
	}
}

// close ends the output: the table's last block (or its header alone when
// there were no records), the JSON array's closing bracket.
func (r *recordWriter[T]) close() error {
	switch r.format {
	case formatTable:
		r.startTable()
		return r.tw.Flush()
	case formatJSON:
		end := "\n]\n"
		if r.n == 0 {
			end = "[]\n"
		}
		_, err := io.WriteString(r.w, end)
		return err
	}
	return nil
}

// formatTime prints a timestamp in UTC with milliseconds, "-" when unset.
func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// displayData shows event data as text when it is valid, printable UTF-8
// (whitespace runs folded to one space, so a row stays one line), else as
// "<N bytes>". max > 0 cuts the text to max runes.
func displayData(b []byte, max int) string {
	if len(b) == 0 {
		return ""
	}
	if !utf8.Valid(b) || !printable(b) {
		return fmt.Sprintf("<%d bytes>", len(b))
	}
	s := strings.Join(strings.Fields(string(b)), " ")
	if max > 0 && utf8.RuneCountInString(s) > max {
		runes := []rune(s)
		s = string(runes[:max-1]) + "…"
	}
	return s
}

func printable(b []byte) bool {
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// writeAll writes the records of a listing up to limit (0: all); the
// caller's context ends the listing when it stops early.
func writeAll[T proto.Message](out *recordWriter[T], limit int, recs iter.Seq2[T, error]) error {
	n := 0
	for r, err := range recs {
		if err != nil {
			out.abort()
			return err
		}
		if err := out.add(r); err != nil {
			return err
		}
		if n++; n == limit {
			break
		}
	}
	return out.close()
}

// embedJSONData rewrites protojson's output so that every "data" member
// (the bytes of an event or a snapshot: the API has no other field of
// that name) holding a JSON object or array shows it as JSON instead of
// base64. Other data stays a base64 string, scalars included: a JSON
// string as data would read like base64 otherwise, so a reader tells the
// two apart by the member's type alone (string: base64; object or array:
// the data itself). Members keep protojson's order.
func embedJSONData(b []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := rewriteJSON(&out, json.RawMessage(b), false); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// rewriteJSON writes v to out, with data embedded when isData holds for v.
func rewriteJSON(out *bytes.Buffer, v json.RawMessage, isData bool) error {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return fmt.Errorf("empty JSON value")
	}
	switch v[0] {
	case '{', '[':
		return rewriteComposite(out, v)
	case '"':
		if isData {
			if data, ok := jsonData(v); ok {
				return json.Compact(out, data)
			}
		}
	}
	out.Write(v)
	return nil
}

// rewriteComposite writes an object or array member by member.
func rewriteComposite(out *bytes.Buffer, v json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(v))
	open, err := dec.Token()
	if err != nil {
		return err
	}
	object := open == json.Delim('{')
	out.WriteByte(v[0])
	for i := 0; dec.More(); i++ {
		if i > 0 {
			out.WriteByte(',')
		}
		key := ""
		if object {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ = tok.(string)
			kb, err := json.Marshal(key)
			if err != nil {
				return err
			}
			out.Write(kb)
			out.WriteByte(':')
		}
		var member json.RawMessage
		if err := dec.Decode(&member); err != nil {
			return err
		}
		if err := rewriteJSON(out, member, object && key == "data"); err != nil {
			return err
		}
	}
	if object {
		out.WriteByte('}')
	} else {
		out.WriteByte(']')
	}
	return nil
}

// jsonData decodes a base64 JSON string and returns the bytes when they
// are a JSON object or array.
func jsonData(v json.RawMessage) ([]byte, bool) {
	var b []byte // encoding/json reads a base64 string into []byte
	if err := json.Unmarshal(v, &b); err != nil {
		return nil, false
	}
	return b, isJSONComposite(b)
}

// isJSONComposite reports whether b is one valid JSON object or array.
func isJSONComposite(b []byte) bool {
	t := bytes.TrimSpace(b)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t)
}
