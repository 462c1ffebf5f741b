package main

import (
	"net/url"
	"os"

	"evx/internal/devenv"
)

// parseDevS3 turns --s3 URL and the standard AWS credential variables into
// a dev-env S3 set-up.
func parseDevS3(s string) (*devenv.S3, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, usagef("--s3 %q: want http://host:port or https://host:port", s)
	}
	access, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if access == "" || secret == "" {
		return nil, usagef("--s3 needs the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables")
	}
	return &devenv.S3{Endpoint: u.Host, TLS: u.Scheme == "https", AccessKey: access, SecretKey: secret}, nil
}
