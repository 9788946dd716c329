// Command verifier checks that a tdforge TD runs exactly the image its
// reference values describe: quote authenticity and TCB (Intel PCS
// collateral, online or from an offline bundle), freshness and TLS binding,
// registers and attributes, and the firmware and runtime event logs.
//
// Exit codes: 0 trusted, 1 not trusted, 2 usage or input error, 3 network.
package main

import (
	"context"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := program.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
