package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     func(string) string
		check   func(config) bool
		wantErr string // a part of the error; "" means none
	}{
		{name: "defaults", check: func(c config) bool {
			return c.DataDir == "./data" && c.Listen == "127.0.0.1:7400" && c.CacheBytes == 256<<20 &&
				c.SubBufferBytes == 32<<20 && c.GracePeriod == 10*time.Second && c.Shards >= 1 && !c.Pprof
		}},
		{name: "pprof flag", args: []string{"--pprof"}, check: func(c config) bool { return c.Pprof }},
		{name: "pprof environment", env: env("ESD_PPROF", "true"), check: func(c config) bool { return c.Pprof }},
		{name: "pprof environment 1", env: env("ESD_PPROF", "1"), check: func(c config) bool { return c.Pprof }},
		{name: "pprof flag wins over environment", args: []string{"--pprof=false"}, env: env("ESD_PPROF", "true"),
			check: func(c config) bool { return !c.Pprof }},
		{name: "bad pprof environment", env: env("ESD_PPROF", "yes"), wantErr: `ESD_PPROF="yes"`},
		{name: "flags", args: []string{"--data-dir", "/d", "--shards", "3", "--subscription-buffer-bytes", "1048576"},
			check: func(c config) bool { return c.DataDir == "/d" && c.Shards == 3 && c.SubBufferBytes == 1<<20 }},
		{name: "environment", env: env("ESD_DATA_DIR", "/e", "ESD_SUBSCRIPTION_BUFFER_BYTES", "2097152"),
			check: func(c config) bool { return c.DataDir == "/e" && c.SubBufferBytes == 2<<20 }},
		{name: "flag wins over environment", args: []string{"--data-dir", "/f"}, env: env("ESD_DATA_DIR", "/e"),
			check: func(c config) bool { return c.DataDir == "/f" }},
		{name: "bad environment value", env: env("ESD_SHARDS", "many"), wantErr: `ESD_SHARDS="many"`},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "flag provided but not defined"},
		{name: "stray argument", args: []string{"serve"}, wantErr: "unexpected arguments"},
		{name: "empty data dir", args: []string{"--data-dir", ""}, wantErr: "--data-dir is empty"},
		{name: "bad listen", args: []string{"--listen", "7400"}, wantErr: "--listen"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: "--log-level"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: "--log-format"},
		{name: "event limit 0", args: []string{"--max-event-bytes", "0"}, wantErr: "--max-event-bytes"},
		{name: "append limit below event limit", args: []string{"--max-append-bytes", "1024"}, wantErr: "--max-append-bytes"},
		{name: "shards 0", args: []string{"--shards", "0"}, wantErr: "--shards"},
		{name: "tiny cache", args: []string{"--cache-bytes", "1000"}, wantErr: "--cache-bytes"},
		{name: "tiny subscription buffer", args: []string{"--subscription-buffer-bytes", "1000"}, wantErr: "--subscription-buffer-bytes"},
		{name: "huge subscription buffer", args: []string{"--subscription-buffer-bytes", "17179869185"}, wantErr: "subscription-buffer-bytes"},
		{name: "grace period 0", args: []string{"--grace-period", "0s"}, wantErr: "--grace-period"},
		{name: "fault defaults", check: func(c config) bool {
			return c.StartupTimeout == 60*time.Second && c.StorageProbeInterval == 5*time.Second
		}},
		{name: "fault flags", args: []string{"--startup-timeout", "5s", "--storage-probe-interval", "0"},
			check: func(c config) bool { return c.StartupTimeout == 5*time.Second && c.StorageProbeInterval == 0 }},
		{name: "startup timeout environment", env: env("ESD_STARTUP_TIMEOUT", "2m"),
			check: func(c config) bool { return c.StartupTimeout == 2*time.Minute }},
		{name: "startup timeout 0", args: []string{"--startup-timeout", "0s"}, wantErr: "--startup-timeout"},
		{name: "negative probe interval", args: []string{"--storage-probe-interval", "-1s"}, wantErr: "--storage-probe-interval"},
		{name: "snapshot defaults", check: func(c config) bool {
			return c.SnapshotRetention == 2 && c.SnapshotEvery == 0 && c.SnapshotReplayThreshold == 0 && c.SnapshotLoadHalfLife == 5*time.Minute
		}},
		{name: "snapshot flags", args: []string{"--snapshot-retention", "5", "--snapshot-every", "100", "--snapshot-replay-threshold", "1000"},
			check: func(c config) bool {
				return c.SnapshotRetention == 5 && c.SnapshotEvery == 100 && c.SnapshotReplayThreshold == 1000
			}},
		{name: "snapshot environment", env: env("ESD_SNAPSHOT_RETENTION", "3", "ESD_SNAPSHOT_EVERY", "50"),
			check: func(c config) bool { return c.SnapshotRetention == 3 && c.SnapshotEvery == 50 }},
		{name: "snapshot retention 0", args: []string{"--snapshot-retention", "0"}, wantErr: "--snapshot-retention"},
		{name: "lease ttl", args: []string{"--max-lease-ttl", "30s"}, check: func(c config) bool { return c.MaxLeaseTTL == 30*time.Second }},
		{name: "lease ttl default", check: func(c config) bool { return c.MaxLeaseTTL == 5*time.Minute }},
		{name: "lease ttl 0", args: []string{"--max-lease-ttl", "0s"}, wantErr: "--max-lease-ttl"},
		{name: "scavenge interval", args: []string{"--scavenge-interval", "6h", "--scavenge-rate", "1000"}, check: func(c config) bool { return c.ScavengeInterval == 6*time.Hour && c.ScavengeRate == 1000 }},
		{name: "scavenge off by default", check: func(c config) bool { return c.ScavengeInterval == 0 && c.ScavengeRate == 50000 }},
		{name: "scavenge interval too short", args: []string{"--scavenge-interval", "1s"}, wantErr: "--scavenge-interval"},
		{name: "scavenge rate 0", args: []string{"--scavenge-rate", "0"}, wantErr: "--scavenge-rate"},
		{name: "idempotency window a day by default", check: func(c config) bool { return c.IdempotencyWindow == 24*time.Hour }},
		{name: "idempotency window forever", args: []string{"--idempotency-window", "0"}, check: func(c config) bool { return c.IdempotencyWindow == 0 }},
		{name: "idempotency window negative", args: []string{"--idempotency-window", "-1h"}, wantErr: "--idempotency-window"},
		{name: "snapshot half-life tiny", args: []string{"--snapshot-load-half-life", "1ms"}, wantErr: "--snapshot-load-half-life"},
		{name: "security off by default", check: func(c config) bool { return c.AuthFile == "" && !c.MetricsAuth }},
		{name: "auth file", args: []string{"--auth-file", "/etc/esd/auth.json", "--metrics-auth"},
			check: func(c config) bool { return c.AuthFile == "/etc/esd/auth.json" && c.MetricsAuth }},
		{name: "auth file environment", env: env("ESD_AUTH_FILE", "/a.json"), check: func(c config) bool { return c.AuthFile == "/a.json" }},
		{name: "metrics auth without an auth file", args: []string{"--metrics-auth"}, wantErr: "--metrics-auth needs --auth-file"},
		{name: "metrics auth with development TLS", args: []string{"--metrics-auth", "--tls-dev-dir", "/d"},
			check: func(c config) bool { return c.MetricsAuth && c.AuthFile == "" && c.TLSDevDir == "/d" }},
		{name: "every error at once", args: []string{"--shards", "0", "--log-format", "xml"}, wantErr: "--shards 0"},
		{name: "every error at once (2)", args: []string{"--shards", "0", "--log-format", "xml"}, wantErr: "--log-format \"xml\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := tc.env
			if getenv == nil {
				getenv = env()
			}
			c, err := parseConfig(tc.args, getenv)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			case tc.check != nil && !tc.check(c):
				t.Fatalf("config %+v", c)
			}
		})
	}
}

// helpEntries splits esd --help into the lines of each flag, by name.
func helpEntries(t *testing.T, help string) map[string]string {
	t.Helper()
	entries := make(map[string]string)
	name := ""
	for _, line := range strings.Split(help, "\n") {
		if rest, ok := strings.CutPrefix(line, "  --"); ok {
			name, _, _ = strings.Cut(rest, " ")
			entries[name] = line + "\n"
			continue
		}
		if name != "" && strings.HasPrefix(line, "        ") {
			entries[name] += line + "\n"
		}
	}
	return entries
}

// TestHelpNamesEveryFlag walks every flag esd defines: the help shows it
// with its meaning, its ESD_ variable and its default, so that no flag
// can be added without them; and that variable does set the flag.
func TestHelpNamesEveryFlag(t *testing.T) {
	entries := helpEntries(t, helpText())
	n := 0
	newFlagSet(&config{}, new(bool)).VisitAll(func(f *flag.Flag) {
		n++
		entry, ok := entries[f.Name]
		if !ok {
			t.Errorf("--%s is not in the help", f.Name)
			return
		}
		if f.Usage == "" || !strings.Contains(entry, f.Usage) {
			t.Errorf("--%s: the help does not say what it is:\n%s", f.Name, entry)
		}
		if f.Name == versionFlag {
			if strings.Contains(entry, "ESD_") {
				t.Errorf("--%s has no environment variable, the help names one:\n%s", f.Name, entry)
			}
			return
		}
		env := envName(f.Name)
		def := f.DefValue
		if def == "" {
			def = "unset"
		} else if typ, _ := flag.UnquoteUsage(f); typ == "string" {
			def = strconv.Quote(def)
		}
		if want := "env " + env + ", default " + def + "\n"; !strings.Contains(entry, want) {
			t.Errorf("--%s: the help lacks %q:\n%s", f.Name, want, entry)
		}
		if err := checkEnvSets(f.Name, env); err != nil {
			t.Errorf("--%s: %v", f.Name, err)
		}
	})
	if n == 0 || len(entries) != n { // every entry of the help is a flag esd has
		t.Errorf("%d flags defined, %d in the help", n, len(entries))
	}
	if !strings.Contains(helpText(), "-h, --help") {
		t.Error("the help does not name --help")
	}
}

// checkEnvSets checks that variable env sets flag name: a value other
// than the default, given through the environment, is the flag's value.
func checkEnvSets(name, env string) error {
	fs := newFlagSet(&config{}, new(bool))
	f := fs.Lookup(name)
	var v string
	switch typ, _ := flag.UnquoteUsage(f); typ {
	case "": // a bool
		v = strconv.FormatBool(f.DefValue != "true")
	case "duration":
		v = "7s"
	case "string":
		v = "set-from-" + env
	default: // the integers
		v = "7"
	}
	if v == f.DefValue {
		return fmt.Errorf("the test value %q is the default", v)
	}
	if err := applyEnv(fs, func(k string) string {
		if k == env {
			return v
		}
		return ""
	}); err != nil {
		return err
	}
	if got := f.Value.String(); got != v {
		return fmt.Errorf("%s=%s: the flag is %q", env, v, got)
	}
	return nil
}

// TestHelpAndVersion: -h, --help and --version answer on stdout with exit
// 0, before anything else is checked; a bad flag is exit 2 on stderr;
// ESD_VERSION is no twin of --version.
func TestHelpAndVersion(t *testing.T) {
	oldVersion, oldCommit := version, commit
	version, commit = "v1.2.3", "abc1234"
	t.Cleanup(func() { version, commit = oldVersion, oldCommit })
	for _, tc := range []struct {
		args   []string
		env    map[string]string
		code   int
		done   bool
		stdout string
		stderr string
	}{
		{args: []string{"--help"}, done: true, stdout: "Usage: esd [flags]"},
		{args: []string{"-h"}, done: true, stdout: "env ESD_DATA_DIR, default \"./data\""},
		{args: []string{"--help"}, env: map[string]string{"ESD_SHARDS": "many"}, done: true, stdout: "Usage: esd"},
		{args: []string{"--version"}, done: true, stdout: "esd v1.2.3 (commit abc1234, " + runtime.Version() + ")\n"},
		{args: []string{"--shards", "0", "--version"}, done: true, stdout: "esd v1.2.3 (commit abc1234"},
		{args: []string{"--nope"}, code: 2, done: true, stderr: "Run 'esd --help' for the flags."},
		{env: map[string]string{"ESD_VERSION": "true"}},
	} {
		_, err := parseConfig(tc.args, func(k string) string { return tc.env[k] })
		var stdout, stderr bytes.Buffer
		code, done := answerConfig(err, &stdout, &stderr)
		if code != tc.code || done != tc.done {
			t.Errorf("%v %v: exit %d (done %t), want %d (done %t); err %v", tc.args, tc.env, code, done, tc.code, tc.done, err)
		}
		if !strings.Contains(stdout.String(), tc.stdout) || (tc.stdout == "") != (stdout.Len() == 0) {
			t.Errorf("%v: stdout %q, want %q", tc.args, stdout.String(), tc.stdout)
		}
		if !strings.Contains(stderr.String(), tc.stderr) || (tc.stderr == "") != (stderr.Len() == 0) {
			t.Errorf("%v: stderr %q, want %q", tc.args, stderr.String(), tc.stderr)
		}
	}
	if _, err := parseConfig([]string{"--help"}, func(string) string { return "" }); !errors.Is(err, errHelp) {
		t.Errorf("--help: %v, want errHelp", err)
	}
}
