//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tmpfsNS is a small tmpfs mounted in a mount namespace of its own, held
// by a sleeping process: esd runs in that namespace (through nsenter),
// the test reaches the files through /proc/PID/root.
type tmpfsNS struct {
	holder *exec.Cmd
	mnt    string // the mount point, as esd sees it
}

// newTmpfs mounts a tmpfs of size bytes, or skips the test where that is
// not allowed (it needs root, or unprivileged user namespaces, and the
// unshare and nsenter commands).
func newTmpfs(t *testing.T, size int) *tmpfsNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a tmpfs of our own needs root here (unshare -m, mount)")
	}
	for _, c := range []string{"unshare", "nsenter", "mount"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s not found: %v", c, err)
		}
	}
	mnt := t.TempDir()
	ready := filepath.Join(t.TempDir(), "ready")
	holder := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount -t tmpfs -o size=%d tmpfs %s && touch %s && exec sleep 3600", size, mnt, ready))
	dieWithParent(holder)
	if err := holder.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Skip("could not mount a tmpfs in a mount namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &tmpfsNS{holder: holder, mnt: mnt}
}

// path is p (under the mount point) as the test reaches it.
func (n *tmpfsNS) path(p string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", n.holder.Process.Pid), p)
}

// esdBin returns a script that runs esd in the namespace: nsenter execs
// esd, so the process started is esd itself (signals reach it).
func (n *tmpfsNS) esdBin(t *testing.T) string {
	t.Helper()
	script := filepath.Join(t.TempDir(), "esd-in-tmpfs")
	body := fmt.Sprintf("#!/bin/sh\nexec nsenter -t %d -m -- %s \"$@\"\n", n.holder.Process.Pid, esdBin)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

// ballast writes a file of size bytes (space to free later).
func (n *tmpfsNS) ballast(t *testing.T, name string, size int) {
	t.Helper()
	if err := os.WriteFile(n.path(filepath.Join(n.mnt, name)), make([]byte, size), 0o644); err != nil {
		t.Fatalf("ballast %s: %v", name, err)
	}
}

func (n *tmpfsNS) remove(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(n.path(filepath.Join(n.mnt, name))); err != nil {
		t.Fatal(err)
	}
}

// fillUntilFull appends 64 KiB events to streams full-0..7 until an
// append fails with STORAGE_FAILED; it returns the acknowledged events'
// counts per stream.
func fillUntilFull(t *testing.T, c *client, acked map[string]int) {
	t.Helper()
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i*7 + i/251) // not all zeros: the sstables do not shrink it much
	}
	for i := 0; ; i++ {
		stream := fmt.Sprintf("full-%d", i%8)
		evs := make([]*esdv1.ProposedEvent, 4)
		for j := range evs {
			evs[j] = &esdv1.ProposedEvent{Type: "Filled", Data: data}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.streams.Append(ctx, &esdv1.AppendRequest{Stream: stream, Events: evs})
		cancel()
		switch {
		case err == nil:
			acked[stream] += len(evs)
		case status.Code(err) == codes.Unavailable && reasonOf(err) == "STORAGE_FAILED":
			return
		default:
			t.Fatalf("append %d: %v, want success or STORAGE_FAILED", i, err)
		}
		if i > 10000 {
			t.Fatal("the disk never filled")
		}
	}
}

// checkAcked reads every stream: the acknowledged events, in order, and
// at most what a commit in flight at the failure adds (a batch durable
// but not acknowledged: its client got STORAGE_FAILED).
func checkAcked(t *testing.T, c *client, acked map[string]int) {
	t.Helper()
	for stream, n := range acked {
		evs, err := c.readStream(context.Background(), stream)
		if err != nil {
			t.Fatalf("read %s: %v", stream, err)
		}
		if len(evs) < n {
			t.Fatalf("%s: %d events, want the %d acknowledged", stream, len(evs), n)
		}
		if len(evs) > n {
			t.Logf("%s: %d events beyond the %d acknowledged (durable, answered STORAGE_FAILED)", stream, len(evs)-n, n)
		}
	}
}

// waitLogged waits until esd has logged msg n times in all.
func waitLogged(t *testing.T, p *esdProc, msg string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for strings.Count(p.logs.String(), `"msg":"`+msg+`"`) < n {
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("esd did not log %q %d times in %v (exited: %v)\n%s", msg, n, d, p.exited(), p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFullDisk runs esd on a real, small tmpfs that fills up:
//   - appends fail with STORAGE_FAILED, reads of every stream go on;
//   - restarted on the full disk, esd answers /healthz, says "starting"
//     on /readyz, and gives up after --startup-timeout with exit code 1;
//     SIGTERM during that open ends it at once;
//   - with room again, the open finishes; filled again, then freed, esd
//     restarts itself (same process) and takes appends, with every
//     acknowledged event there.
func TestFullDisk(t *testing.T) {
	const mib = 1 << 20
	ns := newTmpfs(t, 80*mib)
	ns.ballast(t, "ballast-1", 16*mib)
	ns.ballast(t, "ballast-2", 36*mib)
	bin := ns.esdBin(t)
	data := filepath.Join(ns.mnt, "data")
	flags := []string{"--shards", "2", "--cache-bytes", "8388608", "--storage-probe-interval", "200ms"}
	acked := map[string]int{}

	// 1. Fill; reads go on.
	p := startESDBin(t, bin, data, flags...)
	c := dial(t, p.Addr)
	fillUntilFull(t, c, acked)
	t.Logf("full after %v events", acked)
	checkAcked(t, c, acked)
	if code, body := httpGet(t, p.HTTPAddr, "/readyz"); code != 503 || !strings.Contains(body, "storage failed") {
		t.Errorf("/readyz on a full disk: %d %q", code, body)
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitExit(stopTimeout)
	t.Logf("SIGTERM on the failed store: exit code %d after %v", p.exitCode(), time.Since(start))

	// 2. The disk is still full: the open cannot finish.
	p = spawnESDBin(t, bin, data, append(flags, "--startup-timeout", "3s")...)
	start = time.Now()
	p.waitExit(30 * time.Second)
	took := time.Since(start)
	if p.exitCode() != 1 || !strings.Contains(p.logs.String(), "not open after 3s") {
		t.Fatalf("startup on a full disk: exit code %d after %v, want 1 and the startup timeout\n%s", p.exitCode(), took, p.logs)
	}
	t.Logf("startup on a full disk: exit code 1 after %v", took)

	p = spawnESDBin(t, bin, data, flags...)
	waitLogged(t, p, "opening store (replaying the WAL)", 1, startTimeout)
	waitLogged(t, p, "http listening", 1, startTimeout)
	time.Sleep(time.Second) // into the open, which waits for a flush that fails
	if p.exited() {
		t.Fatalf("esd exited during the open on a full disk\n%s", p.logs)
	}
	p.logs.mu.Lock()
	httpAddr := p.logs.http
	p.logs.mu.Unlock()
	if code, _ := httpGet(t, httpAddr, "/healthz"); code != 200 {
		t.Errorf("/healthz during the open: %d", code)
	}
	if code, body := httpGet(t, httpAddr, "/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Errorf("/readyz during the open: %d %q", code, body)
	}
	start = time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitExit(10 * time.Second)
	t.Logf("SIGTERM during the open: exit code %d after %v", p.exitCode(), time.Since(start))
	if p.exitCode() != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("SIGTERM during the open: exit code %d after %v, want 0 within 5s", p.exitCode(), time.Since(start))
	}

	// 3. Room again (while starting): the open finishes, every
	// acknowledged event is there.
	p = spawnESDBin(t, bin, data, flags...)
	waitLogged(t, p, "opening store (replaying the WAL)", 1, startTimeout)
	ns.remove(t, "ballast-1")
	waitLogged(t, p, "listening", 1, 60*time.Second)
	p.logs.mu.Lock()
	addr := p.logs.addr
	p.logs.mu.Unlock()
	c = dial(t, addr)
	checkAcked(t, c, acked)

	// 4. Full again, then room: esd restarts itself and takes appends.
	fillUntilFull(t, c, acked)
	ns.remove(t, "ballast-2")
	freed := time.Now()
	waitLogged(t, p, "listening", 2, 60*time.Second) // the re-executed esd
	t.Logf("esd restarted itself and listens %v after the disk had room", time.Since(freed))
	p.logs.mu.Lock()
	addr = p.logs.addr
	p.logs.mu.Unlock()
	c = dial(t, addr)
	checkAcked(t, c, acked)
	if _, err := c.streams.Append(context.Background(), &esdv1.AppendRequest{Stream: "after",
		Events: []*esdv1.ProposedEvent{{Type: "After", Data: []byte("x")}}}); err != nil {
		t.Fatalf("append after the restart: %v", err)
	}
	p.Stop()
}
