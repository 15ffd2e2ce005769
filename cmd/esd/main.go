// Command esd is the esd event-store server.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "esd:", err)
		os.Exit(2)
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
