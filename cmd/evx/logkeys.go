package main

import (
	"fmt"

	"evx/config"
	"evx/crypto"

	"github.com/spf13/cobra"
)

func newLogKeysCmd() *cobra.Command {
	var cfgPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "log-keys --config gateway.yaml [--json]",
		Short: "Print the verifier keys of this gateway's transfer log, for peers and auditors",
		Long: `log-keys prints the two verifier keys that the gateway's signing key
derives for its transfer log (docs/audit.md): log_key checks its signed
checkpoints, witness_key the cosignatures it makes as a witness of its
peers' logs. Each peer lists both in its peers entry for this gateway, in
the form printed here; auditors pin log_key in their profile.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" {
				return usagef("--config is required")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			k, err := crypto.ReadSigningKeyFile(cfg.SigningKey)
			if err != nil {
				return err
			}
			logKey, witnessKey := k.LogVerifierKeys(cfg.ID)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{"gateway": cfg.ID, "log_key": logKey, "witness_key": witnessKey})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# transfer-log keys of gateway %s, for its peers' entry and auditors' profiles\nlog_key: %s\nwitness_key: %s\n", cfg.ID, logKey, witnessKey)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
