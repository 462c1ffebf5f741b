// Package api defines the gateway's local HTTPS API as both of its ends see
// it: the JSON answers, the roles of local users, the delivery states of a
// bundle, and the one table of error codes with the HTTP status each is
// sent with. The daemon (package gateway) and its client (package client)
// import it; neither imports the other, so the command line that pushes and
// pulls does not link the daemon.
//
// The API is specified in docs/api.md; a test keeps that document's code
// table equal to [Codes].
package api
