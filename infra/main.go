// Command infra is the CDK app that deploys Cirrus. Run it through the CDK
// CLI from the repository root (cdk.json): `npx aws-cdk synth`, `cdk deploy`.
package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
)

func main() {
	defer jsii.Close()
	app := awscdk.NewApp(nil)
	NewCirrusStack(app, "Cirrus", PropsFromContext(app))
	app.Synth(nil)
}
