package main

import (
	"syscall"

	"go.uber.org/zap"
)

// raiseFileLimit raises the soft limit of open files to the hard limit
// (Go does so at start since 1.19 on Linux; this makes it explicit and
// reports the result) and returns the soft limit, 0 if unknown.
func raiseFileLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if r.Cur < r.Max {
		n := r
		n.Cur = n.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n) == nil {
			r = n
		}
	}
	return r.Cur
}

// fitConnections lowers --max-connections to half the open-file limit:
// the store's files, the HTTP listener and the accept loop need the rest.
// Past the file limit, accept fails (EMFILE) and gRPC's accept loop backs
// off for up to a second each time, while established clients wait.
func fitConnections(want int, nofile uint64, lg *zap.Logger) int {
	if nofile == 0 || uint64(want) <= nofile/2 {
		return want
	}
	got := max(int(nofile/2), 1)
	lg.Warn("--max-connections lowered to half the open-file limit",
		zap.Int("max_connections", want), zap.Uint64("open_file_limit", nofile), zap.Int("lowered_to", got))
	return got
}
