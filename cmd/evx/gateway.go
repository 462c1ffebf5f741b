package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"evx/config"
	"evx/crypto"
	"evx/gateway"
	"evx/storage"
	"evx/transfer"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"
)

func newGatewayCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "gateway --config gateway.yaml",
		Short: "Run one country's gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return usagef("--config is required")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			log, err := newLogger()
			if err != nil {
				return err
			}
			defer log.Sync()
			opts, err := gatewayOptions(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			opts.Reload = reloader(cfgPath, cfg)
			g, err := gateway.New(opts)
			if err != nil {
				return err
			}
			defer g.Close()
			eg, ctx := errgroup.WithContext(cmd.Context())
			if cfg.Listen.Metrics != "" {
				serve, err := metricsServer(cfg.Listen.Metrics, g)
				if err != nil {
					return err
				}
				eg.Go(func() error { return serve(ctx) })
			}
			eg.Go(func() error { return g.Run(ctx) })
			// SIGHUP reloads from before the gateway says it is ready:
			// left to its default, it would end the process.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			eg.Go(func() error { return reloadOnHangup(ctx, g, log, hup) })
			// Every listener is open: connections are queued until
			// served.
			if err := notifyReady(os.Getenv); err != nil {
				log.Warn("telling the service manager that the gateway is ready", zap.Error(err))
			}
			return eg.Wait()
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration `FILE`")
	return cmd
}

// newLogger returns the gateway's JSON logger on stderr (see newLoggerTo).
func newLogger() (*zap.Logger, error) {
	return newLoggerTo(zapcore.Lock(os.Stderr)), nil
}

// newLoggerTo returns a JSON logger writing to w, as zap's production
// logger does but without sampling (refusals and other security-relevant
// events must all be kept) and with times and durations people and log
// tools read without conversion: "ts":"2026-12-03T10:22:09.123Z" in UTC
// (ISO 8601 with milliseconds) and "took":"1.2s".
func newLoggerTo(w zapcore.WriteSyncer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = utcMillis
	enc.EncodeDuration = zapcore.StringDurationEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), w, zap.InfoLevel)
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zap.ErrorLevel), zap.ErrorOutput(w))
}

// utcMillis encodes a log entry's time as ISO 8601 in UTC with
// milliseconds, so that lines from gateways in different time zones sort
// and compare as text.
func utcMillis(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(t.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
}

// gatewayOptions turns a loaded configuration into gateway options, reading
// every key, certificate and credential it names.
func gatewayOptions(ctx context.Context, cfg *config.Gateway, log *zap.Logger) (gateway.Options, error) {
	o := gateway.Options{ID: cfg.ID, PeerAddr: cfg.Listen.Peer, APIAddr: cfg.Listen.API,
		MaxBundleSize: int64(cfg.Limits.MaxBundleSize), Logger: log,
		APIMaxConns: cfg.Limits.APIConnections, APIMaxConnsPerSource: cfg.Limits.APIConnectionsPerSource,
		UploadStallTimeout: time.Duration(cfg.Limits.StallTimeout), MaxMergeDelay: time.Duration(cfg.Log.MaxMergeDelay),
		ReaperInterval: time.Duration(cfg.Retention.ReaperInterval), OutboxGrace: time.Duration(cfg.Retention.OutboxGrace),
		HoldUnits: cfg.Retention.HoldUnits}
	var err error
	if o.Certificate, err = tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key); err != nil {
		return o, fmt.Errorf("tls: %w", err)
	}
	if o.LocalCA, err = crypto.ReadCertPool(cfg.TLS.CA); err != nil {
		return o, fmt.Errorf("tls.ca: %w", err)
	}
	if o.SigningKey, err = crypto.ReadSigningKeyFile(cfg.SigningKey); err != nil {
		return o, fmt.Errorf("signing_key: %w", err)
	}
	if o.MasterKey, err = masterKey(cfg.Retention, log); err != nil {
		return o, fmt.Errorf("retention.master_key: %w", err)
	}
	if o.Storage, err = openStorage(ctx, cfg, log); err != nil {
		return o, err
	}
	s, err := gatewaySettings(cfg)
	if err != nil {
		return o, err
	}
	o.Peers, o.Users, o.Agreements, o.ConfigSHA256 = s.Peers, s.Users, s.Agreements, s.ConfigSHA256
	return o, nil
}

// gatewaySettings returns what of a loaded configuration a reload applies:
// the peers, users and agreements, reading the files they name.
func gatewaySettings(cfg *config.Gateway) (*gateway.Settings, error) {
	s := &gateway.Settings{ConfigSHA256: sha256.Sum256([]byte(cfg.String())), Agreements: cfg.AgreementList()}
	for _, p := range cfg.Peers {
		ca, err := crypto.ReadCertPool(p.CA)
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", p.ID, err)
		}
		s.Peers = append(s.Peers, transfer.Peer{ID: p.ID, Address: p.Address, CA: ca, SigningKey: p.SigningKey,
			LogKey: p.LogKey, WitnessKey: p.WitnessKey})
	}
	for _, u := range cfg.Users {
		gu := gateway.User{Unit: u.Identity, Role: u.Role, Purposes: u.Purposes}
		if u.PublicKey != "" {
			var err error
			if gu.Key, err = crypto.ReadPublicKeyFile(u.PublicKey); err != nil {
				return nil, fmt.Errorf("user %s: public key %s: %w", u.Identity, u.PublicKey, err)
			}
		}
		s.Users = append(s.Users, gu)
	}
	return s, nil
}

// reloader reads the configuration file at path again, for a reload of a
// gateway started with running: the whole file is checked as at start,
// and the sections only a start applies are named.
func reloader(path string, running *config.Gateway) func(context.Context) (*gateway.Settings, error) {
	return func(context.Context) (*gateway.Settings, error) {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		s, err := gatewaySettings(cfg)
		if err != nil {
			return nil, err
		}
		s.RestartNeeded = running.RestartNeeded(cfg)
		return s, nil
	}
}

// reloadOnHangup reloads the gateway's configuration on each SIGHUP
// received on hup until ctx is done. A refused reload is logged, and the running configuration
// stays.
func reloadOnHangup(ctx context.Context, g *gateway.Gateway, log *zap.Logger, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		r, err := g.Reload(ctx, "")
		if err != nil {
			continue // logged by the gateway
		}
		if len(r.RestartNeeded) > 0 {
			log.Warn("configuration changes that apply only at the next start", zap.Strings("restart_needed", r.RestartNeeded))
		}
	}
}

// masterKey reads the gateway's master key, first creating the default one
// if it does not exist yet.
func masterKey(r config.RetentionSettings, log *zap.Logger) (*crypto.MasterKey, error) {
	if r.MasterKeyCreatable() {
		f, err := os.OpenFile(r.MasterKey, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case err == nil:
			err = crypto.GenerateMasterKey(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(r.MasterKey)
				return nil, err
			}
			log.Warn("created the gateway's master key: back it up apart from the storage, since nothing stored can be read without it",
				zap.String("path", r.MasterKey))
		case !errors.Is(err, fs.ErrExist):
			return nil, err
		}
	}
	return crypto.ReadMasterKeyFile(r.MasterKey)
}

func openStorage(ctx context.Context, cfg *config.Gateway, log *zap.Logger) (storage.Backend, error) {
	if cfg.Storage.S3 == nil {
		d, err := storage.NewDisk(cfg.Storage.Dir)
		if err != nil {
			return nil, err
		}
		// Leftovers of uploads a crash interrupted; a day is longer than
		// any upload may stall.
		if _, err := d.RemoveStaleTemp(ctx, 24*time.Hour); err != nil {
			return nil, err
		}
		return d, nil
	}
	s := cfg.Storage.S3
	access, secret, err := s.Credentials()
	if err != nil {
		return nil, err
	}
	b, err := storage.NewS3(storage.S3Config{Endpoint: s.Endpoint, Bucket: s.Bucket, Region: s.Region,
		AccessKey: access.Reveal(), SecretKey: secret.Reveal(), UseTLS: s.TLS, CAFile: s.CA,
		ObjectLock: true, LockMode: cmp.Or(cfg.Retention.LockMode, config.DefaultLockMode)})
	if err != nil {
		return nil, err
	}
	switch err := b.EnsureBucket(ctx); {
	case errors.Is(err, storage.ErrLifecycleUnsupported):
		// A backstop only: the reaper removes what retention ends.
		log.Warn("the storage server does not take the whole lifecycle backstop (docs/retention.md)", zap.Error(err))
	case err != nil:
		return nil, err
	}
	return b, nil
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config check gateway.yaml",
		Short: "Work with gateway configuration files",
		Args:  cobra.NoArgs,
		// Without this, cobra would print the help and exit 0.
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("config needs a subcommand: config check FILE")
		},
	}
	var asJSON bool
	check := &cobra.Command{
		Use:   "check gateway.yaml [--json]",
		Short: "Validate a gateway configuration without starting anything",
		Long: `check validates a gateway configuration and the files it names, as the
gateway does when it starts, and prints a summary. What is valid but lets
nothing flow, such as a peer without an agreement ("warning: no agreement
with FR: nothing flows with it"), is a warning on stderr, and the exit code
is still 0. With --json it prints the effective configuration (defaults
filled in, paths absolute) and the warnings, and a failure lists each
problem with its file, line and field.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			if asJSON {
				// The keys of the configuration file, from its YAML form.
				var effective map[string]any
				if err := yaml.Unmarshal([]byte(cfg.String()), &effective); err != nil {
					return err
				}
				warnings := cfg.Warnings(time.Now())
				if warnings == nil {
					warnings = []string{}
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"file": args[0], "valid": true, "config": effective, "warnings": warnings})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n%s", args[0], cfg.Summary())
			// Valid, but letting nothing flow somewhere: said, not refused.
			for _, w := range cfg.Warnings(time.Now()) {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			return nil
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(check)
	return cmd
}

// metricsServer listens on addr and returns the function that serves
// /metrics until ctx is done, from a registry of the binary's own: the
// gateway's collectors and the Go and process collectors.
func metricsServer(addr string, g *gateway.Gateway) (func(context.Context) error, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(g.Collectors()...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	// A scrape is small and quick: every step of it is bounded.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	return func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, func() { srv.Close() })
		defer stop()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}
