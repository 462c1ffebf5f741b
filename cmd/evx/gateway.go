package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"evx/config"
	"evx/crypto"
	"evx/gateway"
	"evx/storage"
	"evx/transfer"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

func newGatewayCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "gateway --config gateway.yaml",
		Short: "Run one country's gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return fmt.Errorf("--config is required")
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
			opts, err := gatewayOptions(cmd, cfg, log)
			if err != nil {
				return err
			}
			g, err := gateway.New(opts)
			if err != nil {
				return err
			}
			return g.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration `FILE`")
	return cmd
}

// newLogger returns a JSON logger on stderr without sampling: refusals and
// other security-relevant events must all be kept.
func newLogger() (*zap.Logger, error) {
	c := zap.NewProductionConfig()
	c.Sampling = nil
	return c.Build()
}

// gatewayOptions turns a loaded configuration into gateway options, reading
// every key, certificate and credential it names.
func gatewayOptions(cmd *cobra.Command, cfg *config.Gateway, log *zap.Logger) (gateway.Options, error) {
	o := gateway.Options{ID: cfg.ID, PeerAddr: cfg.Listen.Peer, APIAddr: cfg.Listen.API,
		MaxBundleSize: int64(cfg.Limits.MaxBundleSize), Logger: log}
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
	if o.Storage, err = openStorage(cmd, cfg); err != nil {
		return o, err
	}
	for _, p := range cfg.Peers {
		ca, err := crypto.ReadCertPool(p.CA)
		if err != nil {
			return o, fmt.Errorf("peer %s: %w", p.ID, err)
		}
		o.Peers = append(o.Peers, transfer.Peer{ID: p.ID, Address: p.Address, CA: ca, SigningKey: p.SigningKey})
	}
	for _, u := range cfg.Users {
		gu := gateway.User{Unit: u.Identity, Role: string(u.Role)}
		if u.PublicKey != "" {
			data, err := os.ReadFile(u.PublicKey)
			if err != nil {
				return o, fmt.Errorf("user %s: %w", u.Identity, err)
			}
			if gu.Key, err = crypto.ParsePublicKey(data); err != nil {
				return o, fmt.Errorf("user %s: public key: %w", u.Identity, err)
			}
		}
		o.Users = append(o.Users, gu)
	}
	return o, nil
}

func openStorage(cmd *cobra.Command, cfg *config.Gateway) (storage.Backend, error) {
	if cfg.Storage.S3 == nil {
		d, err := storage.NewDisk(cfg.Storage.Dir)
		if err != nil {
			return nil, err
		}
		// Leftovers of uploads a crash interrupted; a day is longer than
		// any upload may stall.
		if _, err := d.RemoveStaleTemp(cmd.Context(), 24*time.Hour); err != nil {
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
		AccessKey: access.Reveal(), SecretKey: secret.Reveal(), UseTLS: s.TLS, CAFile: s.CA})
	if err != nil {
		return nil, err
	}
	if err := b.EnsureBucket(cmd.Context()); err != nil {
		return nil, err
	}
	return b, nil
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with gateway configuration files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check gateway.yaml",
		Short: "Validate a gateway configuration without starting anything",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n%s", args[0], cfg.Summary())
			return nil
		},
	})
	return cmd
}
