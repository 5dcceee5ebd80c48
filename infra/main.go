// Command infra is the CDK app that deploys Cirrus. Run it through the CDK
// CLI from the repository root (cdk.json): `make synth`, `make deploy`, or
// `npx --prefix infra cdk synth -c domainName=matrix.example.org`.
// `-c syncTier=fargate` adds the sync tier (synctier.go), whose image
// `make image` builds first.
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

func main() {
	defer jsii.Close()
	app := awscdk.NewApp(nil)
	props, err := PropsFromContext(app)
	if err == nil {
		_, err = NewCirrusStack(app, "Cirrus", props)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cirrus stack:\n%v\n", err)
		jsii.Close()
		os.Exit(1)
	}
	app.Synth(nil)
}
