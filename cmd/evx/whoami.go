package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"evx/api"
	"evx/client"
	"evx/config"
	"evx/crypto"

	"github.com/spf13/cobra"
)

func newWhoamiCmd() *cobra.Command {
	var profile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "whoami [--profile P] [--json]",
		Short: "Show who your gateway takes you to be, and check the connection",
		Long: `whoami connects to the gateway of your profile and shows the gateway's URL,
that TLS verified the gateway's certificate against the profile's CA, your
identity and role there, and until when your client certificate is valid.
For a submitter or a recipient it also checks that the profile's unit key is
the one the gateway's directory lists for the unit.

Run it first when push or pull cannot connect: a refused certificate is
reported with the file it came from and the side that refused it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, key, err := loadProfile(profile)
			if err != nil {
				return err
			}
			// Read again for the names of its files, which whoami shows
			// and its errors give.
			path, _, err := profilePath(profile, os.Getenv)
			if err != nil {
				return err
			}
			p, err := config.LoadProfile(path)
			if err != nil {
				return err
			}
			c = c.WithFiles(p.Cert, p.CA)
			ctx := cmd.Context()
			conn, err := c.Check(ctx)
			if err != nil {
				return err
			}
			me := conn.WhoAmI
			listed, err := unitKeyListed(cmd, c, me, key)
			if err != nil {
				return err
			}
			leaf := c.Certificate()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"gateway": me.Gateway, "gateway_url": c.Gateway(), "unit": me.Unit, "role": me.Role,
					"tls_version":         tls.VersionName(conn.TLSVersion),
					"gateway_certificate": map[string]any{"uris": certURIs(conn.GatewayCert), "not_after": conn.GatewayCert.NotAfter, "verified_against": p.CA},
					"client_certificate":  map[string]any{"file": p.Cert, "not_after": leaf.NotAfter},
					"unit_key":            map[string]any{"file": p.UnitKey, "listed": listed},
				})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "gateway       %s at %s\n", printable(me.Gateway), c.Gateway())
			fmt.Fprintf(w, "tls           %s; the gateway's certificate (%s) verified against the CA in %s\n",
				tls.VersionName(conn.TLSVersion), printable(strings.Join(certURIs(conn.GatewayCert), ", ")), p.CA)
			fmt.Fprintf(w, "identity      %s, role %s\n", printable(me.Unit), printable(string(me.Role)))
			fmt.Fprintf(w, "certificate   %s, valid until %s%s\n", p.Cert, leaf.NotAfter.UTC().Format(time.RFC3339), expiresIn(leaf.NotAfter))
			switch listed {
			case nil:
				fmt.Fprintf(w, "unit key      %s (not checked: role %s has no directory entry)\n", p.UnitKey, printable(string(me.Role)))
			default:
				fmt.Fprintf(w, "unit key      %s, listed for %s in the gateway's directory\n", p.UnitKey, printable(me.Unit))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&profile, "profile", "", "profile `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// unitKeyListed checks that key is the one the gateway's directory lists
// for the unit: its signing key for a submitter, its age recipient for a
// recipient. It returns nil for roles without a directory entry.
func unitKeyListed(cmd *cobra.Command, c *client.Client, me api.WhoAmI, key *crypto.UnitKey) (*bool, error) {
	if me.Role != api.RoleSubmitter && me.Role != api.RoleRecipient {
		return nil, nil
	}
	e, err := c.Lookup(cmd.Context(), me.Unit)
	if err != nil {
		return nil, fmt.Errorf("looking up %s in the gateway's directory: %w", printable(me.Unit), err)
	}
	pub := key.Public()
	if me.Role == api.RoleSubmitter && e.SigningKey != pub.SigningKey || me.Role == api.RoleRecipient && e.AgeRecipient != pub.AgeRecipient {
		return nil, fmt.Errorf("the profile's unit key is not the one the gateway's directory lists for %s: the gateway would refuse what it signs, or no one could seal to it", printable(me.Unit))
	}
	ok := true
	return &ok, nil
}

// certURIs lists a certificate's URI SANs, such as evx://gateway/DE.
func certURIs(c *x509.Certificate) []string {
	uris := []string{}
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	return uris
}

// expiresIn says how soon a certificate expires, with a warning within a
// month.
func expiresIn(notAfter time.Time) string {
	left := time.Until(notAfter)
	days := int(left.Hours() / 24)
	if left < 30*24*time.Hour {
		return fmt.Sprintf(" (in %d days: renew it soon)", days)
	}
	return fmt.Sprintf(" (in %d days)", days)
}
