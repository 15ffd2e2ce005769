package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
)

// liveColumn is a column of a liveTable: its header and the width it
// starts with.
type liveColumn struct {
	name  string
	width int
}

// liveTable prints table rows as they come, each written at once, so that
// `esctl subscribe ... | head` shows rows when the events arrive rather
// than when a block is full. A tabwriter cannot align rows it has not
// seen, so the columns start at a width that fits the usual values and
// widen to the widest cell so far: a later row may sit further right than
// an earlier one, but never runs into its neighbour.
type liveTable struct {
	w       io.Writer
	header  []string
	widths  []int
	started bool
}

func newLiveTable(w io.Writer, cols []liveColumn) *liveTable {
	t := &liveTable{w: w}
	for _, c := range cols {
		t.header = append(t.header, c.name)
		t.widths = append(t.widths, max(c.width, utf8.RuneCountInString(c.name)))
	}
	return t
}

// row writes one row, after the header if it is the first.
func (t *liveTable) row(cells []string) error {
	if err := t.start(); err != nil {
		return err
	}
	return t.line(cells)
}

// start writes the header, once.
func (t *liveTable) start() error {
	if t.started {
		return nil
	}
	t.started = true
	return t.line(t.header)
}

// line writes cells padded to the column widths (the last one unpadded),
// two spaces apart as the other tables are, in one Write.
func (t *liveTable) line(cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		b.WriteString(c)
		if i == len(cells)-1 {
			break
		}
		n := utf8.RuneCountInString(c)
		t.widths[i] = max(t.widths[i], n)
		b.WriteString(strings.Repeat(" ", t.widths[i]-n+2))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(t.w, b.String())
	return err
}

// liveWriter prints a sequence that may never end (subscribe, group
// join) as it comes: table rows, or one JSON object a line for json and
// jsonl alike (a JSON array that is never closed is of no use to anyone).
// Notes about the sequence (caught up, checkpoint, ended) go to stderr as
// "-- " lines, so stdout holds only the records; with markers they go to
// stdout instead, as JSON lines among the records.
type liveWriter[T proto.Message] struct {
	format         string
	stdout, stderr io.Writer
	markers        bool
	table          *liveTable
	row            func(T) []string
}

func newLiveWriter[T proto.Message](a *app, cols []liveColumn, row func(T) []string, markers bool) *liveWriter[T] {
	return &liveWriter[T]{
		format: a.output, stdout: a.stdout, stderr: a.stderr, markers: markers,
		table: newLiveTable(a.stdout, cols), row: row,
	}
}

func (w *liveWriter[T]) add(m T) error {
	if w.format == formatTable {
		return w.table.row(w.row(m))
	}
	return writeJSONLine(w.stdout, m)
}

// note prints a note: text to stderr, or m as a JSON line with markers.
func (w *liveWriter[T]) note(m proto.Message, text string) error {
	if w.markers && w.format != formatTable {
		return writeJSONLine(w.stdout, m)
	}
	_, err := fmt.Fprintln(w.stderr, "-- "+text)
	return err
}

// close ends the output: a table that got no rows prints its header
// alone, as the other commands' empty tables do. After a failure nothing
// is needed (every line is out already) and close is not called, so an
// error alone does not look like an empty answer.
func (w *liveWriter[T]) close() error {
	if w.format == formatTable {
		return w.table.start()
	}
	return nil
}

// writeJSONLine writes m as one line of JSON in one Write.
func writeJSONLine(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m, false)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
