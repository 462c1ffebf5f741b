package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"evx/config"
	"evx/gateway"

	"github.com/rogpeppe/go-internal/testscript"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestGatewayScripts runs the scripts of testdata/script/gateways: the unit
// commands (push, inbox, pull, whoami, status, outbox) as a user runs them,
// against gateways that the scripts start and stop from evx dev-env's
// files with gw.
func TestGatewayScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script/gateways",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			env.Values[gatewaysKey{}] = &scriptGateways{running: map[string]func() error{}}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"gw":       cmdGw,
			"replace":  cmdReplace,
			"grab":     cmdGrab,
			"randfile": cmdRandfile,
			"exits":    cmdExits,
			"waitfor":  cmdWaitFor,
		},
	})
}

type gatewaysKey struct{}

// scriptGateways are the gateways a script runs in the test process; the
// evx commands it execs reach them on loopback.
type scriptGateways struct {
	running map[string]func() error // by configuration path: stops it
}

// cmdGw starts or stops a gateway from its configuration file, as evx
// gateway runs it: gw start|stop CONFIG. A started gateway is listening
// when gw returns (gateway.New opens the listeners) and runs until gw stop
// or the end of the script, which checks that it stopped cleanly. Its log
// goes to gateway.log beside the configuration.
func cmdGw(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: gw start|stop CONFIG")
	}
	gws := ts.Value(gatewaysKey{}).(*scriptGateways)
	path := ts.MkAbs(args[1])
	switch args[0] {
	case "start":
		if gws.running[path] != nil {
			ts.Fatalf("%s is running already", args[1])
		}
		cfg, err := config.Load(path)
		ts.Check(err)
		logFile, err := os.OpenFile(filepath.Join(filepath.Dir(path), "gateway.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		ts.Check(err)
		log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), logFile, zap.InfoLevel))
		ctx, cancel := context.WithCancel(context.Background())
		opts, err := gatewayOptions(ctx, cfg, log)
		if err != nil {
			cancel()
			ts.Fatalf("%s: %v", args[1], err)
		}
		// As evx gateway does: evx agreement reload reads the file again.
		opts.Reload = reloader(path, cfg)
		g, err := gateway.New(opts)
		if err != nil {
			cancel()
			ts.Fatalf("%s: %v", args[1], err)
		}
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		stop := func() error {
			cancel()
			err := <-done
			logFile.Close()
			return err
		}
		gws.running[path] = stop
		ts.Defer(func() {
			if stop := gws.running[path]; stop != nil {
				delete(gws.running, path)
				if err := stop(); err != nil {
					ts.Logf("gateway %s: %v", args[1], err)
				}
			}
		})
	case "stop":
		stop := gws.running[path]
		if stop == nil {
			ts.Fatalf("%s is not running", args[1])
		}
		delete(gws.running, path)
		ts.Check(stop())
	default:
		ts.Fatalf("usage: gw start|stop CONFIG")
	}
}

// cmdReplace replaces the one occurrence of OLD in a file by NEW, so that
// scripts can derive a faulty profile from a good one: replace FILE OLD NEW.
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: replace FILE OLD NEW")
	}
	data := ts.ReadFile(args[0])
	if strings.Count(data, args[1]) != 1 {
		ts.Fatalf("%s holds %q %d times, want once", args[0], args[1], strings.Count(data, args[1]))
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(strings.Replace(data, args[1], args[2], 1)), 0o600))
}
