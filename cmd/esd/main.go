// Command esd is the esd event-store server.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if code, done := answerConfig(err, os.Stdout, os.Stderr); done {
		os.Exit(code)
	}
	lg, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "esd:", err)
		os.Exit(2)
	}
	err = run(context.Background(), cfg, lg)
	if errors.Is(err, errRestart) {
		lg.Warn("restarting", zapError(err))
		_ = lg.Sync()
		err = reexec() // returns only on failure
		err = fmt.Errorf("restart: %w", err)
	}
	if err != nil {
		lg.Error("esd stopped with an error", zapError(err))
		_ = lg.Sync()
		os.Exit(1)
	}
	_ = lg.Sync()
}

// answerConfig answers a command line that does not start esd: the help
// or the version on stdout (exit 0), or what is wrong with the flags on
// stderr (exit 2). done is false when esd is to start.
func answerConfig(err error, stdout, stderr io.Writer) (code int, done bool) {
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, helpText())
		return 0, true
	case errors.Is(err, errVersion):
		fmt.Fprint(stdout, versionText())
		return 0, true
	default:
		fmt.Fprintf(stderr, "esd: %v\nRun 'esd --help' for the flags.\n", err)
		return 2, true
	}
}
