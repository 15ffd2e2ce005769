package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestLeaseCommands(t *testing.T) {
	e := startESD(t)
	if _, errOut, code := runCLI(t, e.addr, nil, "append", "account-42", `{"balance":100}`, "--type", "Opened"); code != exitOK {
		t.Fatalf("append: exit %d: %s", code, errOut)
	}
	out, errOut, code := runCLI(t, e.addr, nil, "lease", "acquire", "account-42", "--owner", "refunds", "--ttl", "30s", "-q")
	if code != exitOK {
		t.Fatalf("acquire: exit %d: %s", code, errOut)
	}
	token := strings.TrimSpace(out)
	if token == "" || token == "0" {
		t.Fatalf("acquire -q printed %q, want the fencing token", out)
	}

	// Without the token: refused, non-zero, naming STREAM_LEASED and the holder.
	_, errOut, code = runCLI(t, e.addr, nil, "append", "account-42", `{"amount":10}`, "--type", "Purchased")
	if code == exitOK || !strings.Contains(errOut, "STREAM_LEASED") || !strings.Contains(errOut, "refunds") {
		t.Fatalf("append without the token: exit %d, stderr %q; want non-zero naming STREAM_LEASED and the holder", code, errOut)
	}
	_, errOut, code = runCLI(t, e.addr, nil, "delete", "account-42")
	if code == exitOK || !strings.Contains(errOut, "STREAM_LEASED") {
		t.Fatalf("delete without the token: exit %d, stderr %q", code, errOut)
	}
	// With it: written.
	if _, errOut, code := runCLI(t, e.addr, nil, "append", "account-42", `{"amount":-40}`, "--type", "Refunded", "--expected", "0", "--fencing-token", token); code != exitOK {
		t.Fatalf("append with the token: exit %d: %s", code, errOut)
	}
	// A second acquirer is refused after its wait.
	_, errOut, code = runCLI(t, e.addr, nil, "lease", "acquire", "account-42", "--owner", "recount", "--ttl", "30s", "--wait", "50ms")
	if code == exitOK || !strings.Contains(errOut, "STREAM_LEASED") {
		t.Fatalf("second acquire: exit %d, stderr %q", code, errOut)
	}

	out, errOut, code = runCLI(t, e.addr, nil, "lease", "renew", "account-42", "--fencing-token", token, "--ttl", "1m", "-o", "json")
	if code != exitOK {
		t.Fatalf("renew: exit %d: %s", code, errOut)
	}
	var renewed struct {
		Stream, Owner, FencingToken, Expires string
	}
	if err := json.Unmarshal([]byte(out), &renewed); err != nil || renewed.FencingToken != token || renewed.Owner != "refunds" || renewed.Expires == "" {
		t.Fatalf("renew -o json: %q (%v)", out, err)
	}
	out, _, code = runCLI(t, e.addr, nil, "lease", "show", "account-42")
	if code != exitOK || !strings.Contains(out, "refunds") || !strings.Contains(out, token) {
		t.Fatalf("show: exit %d: %q", code, out)
	}
	out, _, code = runCLI(t, e.addr, nil, "lease", "ls", "--prefix", "account-")
	if code != exitOK || !strings.Contains(out, "account-42") || !strings.Contains(out, "FENCING TOKEN") {
		t.Fatalf("ls: exit %d: %q", code, out)
	}
	if _, errOut, code := runCLI(t, e.addr, nil, "lease", "release", "account-42", "--fencing-token", token); code != exitOK {
		t.Fatalf("release: exit %d: %s", code, errOut)
	}
	if _, _, code := runCLI(t, e.addr, nil, "lease", "show", "account-42"); code != exitError {
		t.Fatalf("show after release: exit %d, want %d", code, exitError)
	}
	// Released: appends without a token pass; the old token no longer
	// once the stream was leased again.
	if _, errOut, code := runCLI(t, e.addr, nil, "append", "account-42", `{"amount":10}`, "--type", "Purchased"); code != exitOK {
		t.Fatalf("append after release: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runCLI(t, e.addr, nil, "lease", "acquire", "account-42", "--owner", "recount", "--ttl", "30s"); code != exitOK {
		t.Fatalf("acquire again: exit %d: %s", code, errOut)
	}
	_, errOut, code = runCLI(t, e.addr, nil, "append", "account-42", `{}`, "--type", "Late", "--fencing-token", token)
	if code == exitOK || !strings.Contains(errOut, "STALE_FENCING_TOKEN") {
		t.Fatalf("append with the old token: exit %d, stderr %q", code, errOut)
	}
	// Usage errors.
	if _, _, code := runCLI(t, e.addr, nil, "lease", "acquire", "s", "--ttl", "1s"); code != exitUsage {
		t.Fatalf("acquire without --owner: exit %d, want %d", code, exitUsage)
	}
}
