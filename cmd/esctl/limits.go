package main

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/esdhq/esd/client"
)

// askLimitsAbove is the input size from which esctl asks the server for
// its limits before sending: a call that costs little next to sending
// that much. A smaller input that is still too large (a server with
// limits set lower) is sent, and the server's refusal names the limit as
// well (limitHint).
const askLimitsAbove = 64 << 10

// serverLimits are the append limits a server reports in GetServerInfo;
// 0 is unknown.
type serverLimits struct {
	eventBytes, appendBytes uint64
}

// limits asks the server for its limits. A server that does not tell
// them (an older esd, or a token without admin, which GetServerInfo
// needs) leaves them unknown: the input is sent, and its refusal, if it
// comes, says which limit it broke.
func (a *app) limits(ctx context.Context) (serverLimits, error) {
	cli, err := a.connect()
	if err != nil {
		return serverLimits{}, err
	}
	info, err := cli.ServerInfo(ctx)
	switch st, _ := statusOf(err); {
	case err == nil:
		return serverLimits{eventBytes: info.GetMaxEventBytes(), appendBytes: info.GetMaxAppendBytes()}, nil
	case st.Code() == codes.PermissionDenied, st.Code() == codes.Unauthenticated, st.Code() == codes.Unimplemented:
		return serverLimits{}, nil
	}
	return serverLimits{}, err
}

// reasonSnapshotTooLarge is the server's reason for snapshot data over
// its --max-event-bytes.
const reasonSnapshotTooLarge = "SNAPSHOT_TOO_LARGE"

// tooLargeError is an input refused before it was sent.
type tooLargeError struct {
	what  string // "event data", "snapshot data", ...
	size  int
	limit uint64
	flag  string // esd's flag that sets the limit
	// reason is the server's reason for the same refusal, so that a
	// script sees one reason whichever side refused.
	reason string
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("%s of %d bytes is more than the server's limit of %d bytes (esd --%s): not sent (reason: %s)",
		e.what, e.size, e.limit, e.flag, e.reason)
}

// checkSize refuses an event (or snapshot, what says which) of data and
// metadata that the server would refuse, without sending it.
func (a *app) checkSize(ctx context.Context, what, reason string, data, metadata []byte) error {
	if len(data)+len(metadata) <= askLimitsAbove {
		return nil
	}
	lim, err := a.limits(ctx)
	if err != nil {
		return err
	}
	if lim.eventBytes > 0 && uint64(len(data)) > lim.eventBytes {
		return &tooLargeError{what: what, size: len(data), limit: lim.eventBytes, flag: "max-event-bytes", reason: reason}
	}
	if total := len(data) + len(metadata); lim.appendBytes > 0 && uint64(total) > lim.appendBytes {
		return &tooLargeError{what: "event data and metadata", size: total, limit: lim.appendBytes, flag: "max-append-bytes",
			reason: client.ReasonRequestTooLarge}
	}
	return nil
}

// limitHint names the server's limit that refused a request, from the
// refusal's reason (or, for a request too large for the server to read
// at all, gRPC's own message).
func limitHint(st *status.Status) string {
	flag := ""
	switch errorReason(st) {
	case client.ReasonEventTooLarge, reasonSnapshotTooLarge:
		flag = "max-event-bytes"
	case client.ReasonRequestTooLarge:
		flag = "max-append-bytes"
	case client.ReasonTooManyEvents:
		flag = "max-append-events"
	case "":
		if st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max") {
			flag = "max-append-bytes"
		}
	}
	if flag == "" {
		return ""
	}
	return "the server's limit esd --" + flag + " refused it"
}
