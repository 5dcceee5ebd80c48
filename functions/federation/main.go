// Command federation is the Lambda function behind API Gateway's
// server-server routes (/_matrix/federation, /_matrix/key).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/cirrus-matrix/cirrus/shared/lambdahttp"
	"github.com/cirrus-matrix/cirrus/shared/server"
)

func main() {
	srv, err := server.OpenLambda(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lambdahttp.Start(srv.FederationHandler())
}
