// Package client is a local user's client of an evx gateway's HTTPS API
// (docs/api.md): [Client] makes the API's requests, [Push] seals files on
// this machine and submits the bundle, [Pull] downloads a received bundle
// and opens it on this machine. It imports the API's types (package api)
// and package crypto, never the daemon.
package client
