// Command sender is the Lambda function subscribed to the federation queue:
// it runs each message's work (sending PDUs and EDUs to other servers) and
// reports failed messages individually, so that only they are retried.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/cirrus-matrix/cirrus/shared/server"
)

func main() {
	srv, err := server.OpenLambda(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lambda.Start(srv.Jobs.HandleSQSEvent)
}
