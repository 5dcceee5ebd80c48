// Command client is the Lambda function behind API Gateway's client-server
// routes (/_matrix/client, /_matrix/media, /_synapse/admin, /.well-known/matrix).
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
	lambdahttp.Start(srv.ClientHandler())
}
