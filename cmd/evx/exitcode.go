package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"evx/api"
	"evx/client"
	"evx/config"
	"evx/crypto"
)

// The exit codes of evx. Scripts act on them, so they are documented in
// evx --help and README.md (from exitCodes) and never change meaning.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitRefused     = 3
	exitUnavailable = 4
	exitVerify      = 5
)

// exitCodes is the one table of exit codes: the code, the category that
// JSON errors carry as their code when there is no API error code, and
// what it means.
var exitCodes = []struct {
	Exit     int
	Category string
	Meaning  string
}{
	{exitOK, "", "success"},
	{exitFailure, "failure", "any other failure, such as a file that cannot be read or written, or a bad configuration or profile"},
	{exitUsage, "usage", "bad usage: an unknown command or flag, a wrong number of arguments, a missing or bad flag value"},
	{exitRefused, "refused", "refused: the gateway refused the request (an API error that is not temporary) or a peer gateway refused the bundle or the client certificate"},
	{exitUnavailable, "unavailable", "unavailable: the gateway cannot be reached, or answered that it cannot serve for now (a temporary API error); the same command may succeed later"},
	{exitVerify, "verification", "verification failed: a signature, a hash or size, the expected sender or the recipient did not check out, the file is not a well-formed bundle, the gateway's certificate did not verify, or its answer contradicts the request (another bundle's envelope, more bytes than the envelope declares); or a transfer log failed verification (evx audit, evx report)"},
}

// exitHelp is the table of exit codes for evx --help.
func exitHelp() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, c := range exitCodes {
		fmt.Fprintf(&b, "  %d  %s\n", c.Exit, c.Meaning)
	}
	b.WriteString(`With --json, a failure is reported on stderr as one JSON object:
  {"error": {"message": "...", "code": "...", "exit": N}}
where code is the gateway's API error code, or else the category of the
exit code (failure, usage, refused, unavailable, verification).`)
	return b.String()
}

// usageError is a command line that asks for something evx cannot do as
// written: it exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usage error (exit 2) with a formatted message.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// usage marks err, if not nil, as a usage error.
func usage(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// refusedBundle is implemented by errors that report a peer gateway's
// final refusal of a bundle: they exit 3, with the refusal's code.
type refusedBundle interface {
	error
	RefusalCode() string
}

// verificationErrors are crypto's sentinels for a check of a bundle that
// failed.
var verificationErrors = []error{
	crypto.ErrBadSignature, crypto.ErrPayloadHash, crypto.ErrPayloadSize,
	crypto.ErrNotRecipient, crypto.ErrUnexpectedSender, crypto.ErrNotBundle,
	crypto.ErrContentMismatch,
	// A gateway whose answer contradicts the bundle asked for.
	client.ErrBadAnswer,
}

// classify returns the exit code of err and the code a JSON error
// carries: the API's error code for an *api.Error, else the category of
// the exit code.
func classify(err error) (exit int, code string) {
	var (
		usageErr usageError
		apiErr   *api.Error
		refused  refusedBundle
		connErr  *client.ConnError
		opErr    *net.OpError
	)
	switch {
	case err == nil:
		return exitOK, ""
	case errors.As(err, &usageErr):
		return exitUsage, category(exitUsage)
	case errors.As(err, &apiErr):
		if apiErr.Code.Temporary() {
			return exitUnavailable, string(apiErr.Code)
		}
		return exitRefused, string(apiErr.Code)
	case errors.As(err, &refused):
		return exitRefused, refused.RefusalCode()
	}
	for _, v := range verificationErrors {
		if errors.Is(err, v) {
			return exitVerify, category(exitVerify)
		}
	}
	switch {
	case errors.As(err, &connErr):
		switch {
		case connErr.Temporary():
			return exitUnavailable, category(exitUnavailable)
		case connErr.Refused == client.RefusedByClient:
			return exitVerify, category(exitVerify)
		}
		return exitRefused, category(exitRefused)
	case errors.As(err, &opErr) && opErr.Op == "dial", errors.Is(err, context.DeadlineExceeded):
		return exitUnavailable, category(exitUnavailable)
	}
	// After the network's errors: a log that could not be read was not
	// found wrong.
	var vf *verifyFailure
	if errors.As(err, &vf) {
		return exitVerify, category(exitVerify)
	}
	return exitFailure, category(exitFailure)
}

func category(exit int) string {
	for _, c := range exitCodes {
		if c.Exit == exit {
			return c.Category
		}
	}
	return category(exitFailure)
}

// jsonError is the JSON form of a failure.
type jsonError struct {
	Error jsonErrorBody `json:"error"`
}

type jsonErrorBody struct {
	Message string `json:"message"`
	Code    string `json:"code"`
	Exit    int    `json:"exit"`
	// Problems lists the problems of a configuration or profile, each
	// located by file, line and field.
	Problems []jsonProblem `json:"problems,omitempty"`
}

type jsonProblem struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// reportError prints err on stderr, as one JSON object when asJSON, and
// returns the exit code.
func reportError(stderr io.Writer, err error, exit int, code string, asJSON bool) {
	if !asJSON {
		fmt.Fprintf(stderr, "evx: %v\n", err)
		return
	}
	body := jsonErrorBody{Message: err.Error(), Code: code, Exit: exit}
	var list config.Errors
	var one *config.Error
	switch {
	case errors.As(err, &list):
		for _, e := range list {
			body.Problems = append(body.Problems, jsonProblem{e.File, e.Line, e.Field, e.Msg})
		}
	case errors.As(err, &one):
		body.Problems = []jsonProblem{{one.File, one.Line, one.Field, one.Msg}}
	}
	// One line: a program reads stderr as one JSON value.
	json.NewEncoder(stderr).Encode(jsonError{body})
}
