package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/lease"
	"github.com/esdhq/esd/internal/server"
	"github.com/esdhq/esd/internal/snapshot"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Set at build time: -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

type config struct {
	DataDir        string
	Listen         string
	HTTPListen     string
	LogLevel       string
	LogFormat      string
	MaxEventBytes  int
	MaxAppendBytes int
	Shards         int
	CacheBytes     int64
	SubBufferBytes int
	GracePeriod    time.Duration
	StartupTimeout time.Duration
	// StorageProbeInterval: how often a failed store's disk is probed; 0
	// is never (esd stays failed until restarted).
	StorageProbeInterval time.Duration
	Pprof                bool
	// AuthFile, when set, turns security on (internal/auth); MetricsAuth
	// then puts /metrics behind admin too.
	AuthFile    string
	MetricsAuth bool
	// Snapshots: retention per stream and the default policy.
	SnapshotRetention       int
	SnapshotEvery           uint64
	SnapshotReplayThreshold uint64
	SnapshotLoadHalfLife    time.Duration
	// MaxLeaseTTL bounds the TTL of every lease (LockService).
	MaxLeaseTTL time.Duration
	// ScavengeInterval starts a scavenge this often (0: only on request),
	// deleting ScavengeRate keys a second.
	ScavengeInterval time.Duration
	ScavengeRate     int
	// IdempotencyWindow: a scavenge removes the ids of events hidden for
	// good and older than this (0: never).
	IdempotencyWindow time.Duration
	// Resource limits (server.Limits).
	MaxAppendEvents               int
	MaxRequestDecodedBytes        int
	MaxConnections                int
	MaxStreamsPerConnection       int
	MaxSubscriptions              int
	MaxSubscriptionsPerConnection int
	SubscriptionMemoryBytes       int64
	SubscriberStallTimeout        time.Duration
	MaxInflightBytes              int64
	MaxInflightBytesPerConnection int64
	LargeAppendRate               int64

	// fs is the store's file system; nil means the operating system's.
	// Only tests set it (a disk that fails), through run.
	fs vfs.FS

	// Transport security (tls.go).
	TLSCert       string
	TLSKey        string
	TLSClientCA   string
	TLSClientAuth string
	TLSDevDir     string
	TLSDevHosts   string
	Insecure      bool
}

// errHelp and errVersion: the command line asks for the help or the
// version, which main prints instead of starting esd.
var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// versionFlag asks for the version. It is the one flag without an ESD_
// twin: it is a question, not a setting, and an ESD_VERSION left in an
// environment would turn every start into a version print.
const versionFlag = "version"

// envName is the environment twin of flag name: --data-dir, ESD_DATA_DIR.
func envName(name string) string {
	return "ESD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseConfig reads flags, each with an ESD_ environment twin
// (--data-dir and ESD_DATA_DIR); a flag given on the command line wins.
// The whole config is checked before anything is opened. -h, --help and
// --version return errHelp and errVersion, whatever else is wrong.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	var c config
	var showVersion bool
	fs := newFlagSet(&c, &showVersion)
	envErr := applyEnv(fs, getenv)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, errHelp
		}
		return c, err
	}
	if showVersion {
		return c, errVersion
	}
	if envErr != nil {
		return c, envErr
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return c, c.validate()
}

// applyEnv sets each flag of fs from its ESD_ variable, when set.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var errs error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == versionFlag {
			return
		}
		env := envName(f.Name)
		if v := getenv(env); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = errors.Join(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	return errs
}

// newFlagSet defines esd's flags on c.
func newFlagSet(c *config, showVersion *bool) *flag.FlagSet {
	fs := flag.NewFlagSet("esd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(showVersion, versionFlag, false, "print the version and commit, and exit")
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory of the store (one esd per directory)")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:7400", "gRPC listen address")
	fs.StringVar(&c.HTTPListen, "http-listen", "127.0.0.1:7401", "HTTP listen address for /metrics, /healthz, /readyz (and /debug/pprof/ with --pprof)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "console", "console (for people) or json (for machines)")
	fs.IntVar(&c.MaxEventBytes, "max-event-bytes", 1<<20, "largest event data accepted, in bytes")
	fs.IntVar(&c.MaxAppendBytes, "max-append-bytes", 16<<20, "largest append (all events' data and metadata), in bytes")
	fs.IntVar(&c.Shards, "shards", runtime.NumCPU(), "writer shards (the default is the number of CPUs)")
	fs.Int64Var(&c.CacheBytes, "cache-bytes", 256<<20, "Pebble block cache size, in bytes")
	fs.IntVar(&c.SubBufferBytes, "subscription-buffer-bytes", 32<<20,
		"recent events held in memory for live subscribers, in bytes (one buffer shared by all; a subscriber behind it reads the store)")
	fs.DurationVar(&c.GracePeriod, "grace-period", 10*time.Second, "how long shutdown waits for requests in flight")
	fs.DurationVar(&c.StartupTimeout, "startup-timeout", 60*time.Second,
		"how long opening the store (WAL replay, recovery) may take before esd gives up and exits 1; /healthz answers meanwhile")
	fs.DurationVar(&c.StorageProbeInterval, "storage-probe-interval", 5*time.Second,
		"after a storage failure (a full or failing disk), how often esd checks that the disk takes writes again, "+
			"and then restarts itself to reopen the store; 0 = never (restart esd by hand)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on the HTTP address")
	fs.StringVar(&c.AuthFile, "auth-file", "",
		"auth file (roles, identities, tokens; see esctl token): every call is then authenticated and authorized; reloaded when it changes and on SIGHUP")
	fs.BoolVar(&c.MetricsAuth, "metrics-auth", false, "with security on (--auth-file, or TLS), /metrics needs an admin bearer token too (the HTTP listener asks for no client certificate)")
	fs.IntVar(&c.SnapshotRetention, "snapshot-retention", 2, "snapshots kept per stream (the newest); a save prunes older ones")
	fs.Uint64Var(&c.SnapshotEvery, "snapshot-every", 0,
		"default snapshot policy: advise a snapshot every N events since the latest (0 = off; categories may have their own)")
	fs.Uint64Var(&c.SnapshotReplayThreshold, "snapshot-replay-threshold", 0,
		"default snapshot policy: advise a snapshot when events since the latest x loads per second reach this (0 = off)")
	fs.DurationVar(&c.SnapshotLoadHalfLife, "snapshot-load-half-life", 5*time.Minute,
		"half-life of the streams' load rates (the dynamic snapshot policy)")
	fs.DurationVar(&c.MaxLeaseTTL, "max-lease-ttl", lease.DefaultMaxTTL,
		"the longest TTL of a lease (LockService): a crashed holder blocks its stream for at most this long")
	fs.DurationVar(&c.ScavengeInterval, "scavenge-interval", 0,
		"start a scavenge (removing from disk the events that deletions and retention limits hide) this often, none while one runs; 0 = only when asked (esctl scavenge start)")
	fs.IntVar(&c.ScavengeRate, "scavenge-rate", engine.DefaultScavengeRate,
		"keys a scheduled scavenge deletes per second (an event, each index entry of only removed events, and each id removed is one key)")
	fs.DurationVar(&c.IdempotencyWindow, "idempotency-window", engine.DefaultIdempotencyWindow,
		"a retry of an append within this long is answered as the original even after a scavenge removed its events; a scavenge removes the ids of hidden events older than this; 0 = keep every id forever")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) of the server: TLS on the gRPC and the HTTP address (with --tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "",
		"PEM bundle of the CAs that sign client certificates: gRPC clients must present one (mTLS; see --tls-client-auth)")
	fs.StringVar(&c.TLSClientAuth, "tls-client-auth", "",
		"with a client CA: require (default: no certificate, no connection) or verify-if-given (a certificate is optional, one given must verify)")
	fs.StringVar(&c.TLSDevDir, "tls-dev-dir", "",
		"without --tls-cert: serve TLS and mTLS with development certificates in this directory, made at the first start (NOT for production)")
	fs.StringVar(&c.TLSDevHosts, "tls-dev-hosts", "",
		"comma-separated names and addresses of the development server certificate (default localhost,127.0.0.1,::1 and the host name)")
	fs.BoolVar(&c.Insecure, "insecure", false,
		"serve gRPC and HTTP without TLS, also on addresses other than loopback (ignores --tls-dev-dir; excludes --tls-cert)")

	d := server.DefaultLimits
	fs.IntVar(&c.MaxAppendEvents, "max-append-events", d.MaxAppendEvents,
		"most events in one Append, one AppendMulti (all its appends) or one AppendStream message, counted before decoding (TOO_MANY_EVENTS)")
	fs.IntVar(&c.MaxRequestDecodedBytes, "max-request-decoded-bytes", d.MaxRequestDecodedBytes,
		"largest estimated decoded size of an append request, its wire size plus 1400 bytes an event, checked before decoding (REQUEST_TOO_LARGE)")
	fs.IntVar(&c.MaxConnections, "max-connections", d.MaxConnections,
		"most open gRPC connections; one more is closed at once (lowered to half the open-file limit if above it)")
	fs.IntVar(&c.MaxStreamsPerConnection, "max-streams-per-connection", 256, "most RPCs in flight on one connection (HTTP/2 MAX_CONCURRENT_STREAMS)")
	fs.IntVar(&c.MaxSubscriptions, "max-subscriptions", d.MaxSubscriptions,
		"most Subscribe and consumer group Join calls running (TOO_MANY_SUBSCRIPTIONS)")
	fs.IntVar(&c.MaxSubscriptionsPerConnection, "max-subscriptions-per-connection", d.MaxSubscriptionsPerConnection,
		"most Subscribe and Join calls running on one connection (TOO_MANY_SUBSCRIPTIONS)")
	fs.Int64Var(&c.SubscriptionMemoryBytes, "subscription-memory-bytes", d.SubscriptionMemoryBytes,
		"memory shared equally by subscribers for messages their clients have not read; one stalled past its share is ended (SUBSCRIBER_TOO_SLOW)")
	fs.DurationVar(&c.SubscriberStallTimeout, "subscriber-stall-timeout", d.SubscriberStallTimeout,
		"how long a subscriber's client may read nothing of a message the server holds for it before it is ended (SUBSCRIBER_TOO_SLOW)")
	fs.Int64Var(&c.MaxInflightBytes, "max-inflight-bytes", d.MaxInflightBytes,
		"most event bytes of appends in flight; appends over 64 KiB get all but an eighth of it (INFLIGHT_BYTES)")
	fs.Int64Var(&c.MaxInflightBytesPerConnection, "max-inflight-bytes-per-connection", d.MaxInflightBytesPerConnection,
		"most event bytes of appends in flight from one connection (INFLIGHT_BYTES)")
	fs.Int64Var(&c.LargeAppendRate, "large-append-rate", d.LargeAppendRate,
		"most event bytes a second of appends over 64 KiB written; past it they wait their turn (0: no bound)")
	return fs
}

// helpText is esd --help: every flag, by name, with its meaning, its
// ESD_ variable and its default.
func helpText() string {
	var b strings.Builder
	b.WriteString(`Usage: esd [flags]

esd is the esd event-store server: gRPC on --listen, HTTP (/metrics,
/healthz, /readyz) on --http-listen. Each flag also reads its ESD_
environment variable; a flag on the command line wins. Flags take one
dash or two (-data-dir, --data-dir).

Flags:
`)
	fs := newFlagSet(&config{}, new(bool))
	fs.VisitAll(func(f *flag.Flag) {
		typ, use := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if typ != "" {
			fmt.Fprintf(&b, " %s", typ)
		}
		fmt.Fprintf(&b, "\n        %s\n", use)
		if f.Name == versionFlag {
			return
		}
		def := f.DefValue
		switch {
		case def == "":
			def = "unset"
		case typ == "string":
			def = strconv.Quote(def)
		}
		fmt.Fprintf(&b, "        env %s, default %s\n", envName(f.Name), def)
	})
	b.WriteString("  -h, --help\n        print this help, and exit\n")
	return b.String()
}

// versionText is esd --version.
func versionText() string {
	return fmt.Sprintf("esd %s (commit %s, %s)\n", version, commit, runtime.Version())
}

func (c config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is empty"))
	}
	for name, addr := range map[string]string{"--listen": c.Listen, "--http-listen": c.HTTPListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, addr, err))
		}
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	if c.LogFormat != "console" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want console or json", c.LogFormat))
	}
	if c.MaxEventBytes < 1 || c.MaxEventBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("--max-event-bytes %d: want 1 to 64 MiB", c.MaxEventBytes))
	}
	if c.MaxAppendBytes < c.MaxEventBytes || c.MaxAppendBytes > 256<<20 {
		errs = append(errs, fmt.Errorf("--max-append-bytes %d: want --max-event-bytes to 256 MiB", c.MaxAppendBytes))
	}
	if c.Shards < 1 || c.Shards > 1024 {
		errs = append(errs, fmt.Errorf("--shards %d: want 1 to 1024", c.Shards))
	}
	if c.CacheBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("--cache-bytes %d: want at least 1 MiB", c.CacheBytes))
	}
	if c.SubBufferBytes < 1<<20 || int64(c.SubBufferBytes) > 16<<30 {
		errs = append(errs, fmt.Errorf("--subscription-buffer-bytes %d: want 1 MiB to 16 GiB", c.SubBufferBytes))
	}
	if c.GracePeriod <= 0 {
		errs = append(errs, fmt.Errorf("--grace-period %v: want > 0", c.GracePeriod))
	}
	for _, l := range []struct {
		name   string
		v, min int64
	}{
		{"--max-append-events", int64(c.MaxAppendEvents), 1},
		{"--max-request-decoded-bytes", int64(c.MaxRequestDecodedBytes), 1 << 20},
		{"--max-connections", int64(c.MaxConnections), 1},
		{"--max-streams-per-connection", int64(c.MaxStreamsPerConnection), 1},
		{"--max-subscriptions", int64(c.MaxSubscriptions), 1},
		{"--max-subscriptions-per-connection", int64(c.MaxSubscriptionsPerConnection), 1},
		{"--subscription-memory-bytes", c.SubscriptionMemoryBytes, 1 << 20},
		{"--max-inflight-bytes", c.MaxInflightBytes, int64(c.MaxAppendBytes)},
		{"--max-inflight-bytes-per-connection", c.MaxInflightBytesPerConnection, int64(c.MaxAppendBytes)},
	} {
		if l.v < l.min {
			errs = append(errs, fmt.Errorf("%s %d: want at least %d", l.name, l.v, l.min))
		}
	}
	if c.SubscriberStallTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--subscriber-stall-timeout %v: want at least 100ms", c.SubscriberStallTimeout))
	}
	if c.MaxStreamsPerConnection > 1<<20 {
		errs = append(errs, fmt.Errorf("--max-streams-per-connection %d: want at most %d", c.MaxStreamsPerConnection, 1<<20))
	}
	if c.LargeAppendRate < 0 {
		errs = append(errs, fmt.Errorf("--large-append-rate %d: want >= 0 (0: no bound)", c.LargeAppendRate))
	}
	if c.StorageProbeInterval < 0 {
		errs = append(errs, fmt.Errorf("--storage-probe-interval %v: want >= 0", c.StorageProbeInterval))
	}
	if c.StartupTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--startup-timeout %v: want > 0", c.StartupTimeout))
	}
	if c.SnapshotRetention < 1 || c.SnapshotRetention > snapshot.MaxRetention {
		errs = append(errs, fmt.Errorf("--snapshot-retention %d: want 1 to %d", c.SnapshotRetention, snapshot.MaxRetention))
	}
	if c.MaxLeaseTTL < time.Second || c.MaxLeaseTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--max-lease-ttl %v: want 1s to 24h", c.MaxLeaseTTL))
	}
	if c.ScavengeInterval != 0 && c.ScavengeInterval < time.Minute {
		errs = append(errs, fmt.Errorf("--scavenge-interval %v: want 0 (off) or at least 1m", c.ScavengeInterval))
	}
	if c.IdempotencyWindow < 0 {
		errs = append(errs, fmt.Errorf("--idempotency-window %v: want 0 (forever) or a positive duration", c.IdempotencyWindow))
	}
	if c.ScavengeRate < 1 {
		errs = append(errs, fmt.Errorf("--scavenge-rate %d: want at least 1", c.ScavengeRate))
	}
	if c.SnapshotLoadHalfLife < time.Second {
		errs = append(errs, fmt.Errorf("--snapshot-load-half-life %v: want at least 1s", c.SnapshotLoadHalfLife))
	}
	// With TLS security is on, with an auth file (--tls-cert demands one,
	// --tls-dev-dir makes one: security.go), which --metrics-auth uses.
	if c.MetricsAuth && c.AuthFile == "" && !c.tlsOn() {
		errs = append(errs, errors.New("--metrics-auth needs --auth-file (or TLS, which turns security on)"))
	}
	errs = append(errs, c.validateSecurity()...)
	return errors.Join(append(errs, c.validateTLS()...)...)
}

// newLogger builds zap: console for people, json (sampled, ISO8601 times)
// for machines.
func newLogger(c config) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.LogLevel)
	if err != nil {
		return nil, err
	}
	var zc zap.Config
	if c.LogFormat == "json" {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		zc.DisableStacktrace = true // errors carry their facts; panics log their own stack
	} else {
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
		zc.DisableStacktrace = true
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	return zc.Build()
}

func zapError(err error) zap.Field { return zap.Error(err) }
