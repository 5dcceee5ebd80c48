package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// CirrusStackProps are the operator's choices, read from CDK context values
// so that a deployment is `cdk deploy -c serverName=example.org ...`.
type CirrusStackProps struct {
	awscdk.StackProps
	// ServerName is the Matrix server name (the part after ":" in user IDs).
	ServerName string
	// DomainName is where the API answers; it may differ from ServerName,
	// which then delegates through .well-known.
	DomainName string
}

// PropsFromContext reads the stack's context values. Empty values are
// allowed here; the stack that uses them checks them.
func PropsFromContext(app awscdk.App) *CirrusStackProps {
	str := func(key string) string {
		if v, ok := app.Node().TryGetContext(jsii.String(key)).(string); ok {
			return v
		}
		return ""
	}
	return &CirrusStackProps{ServerName: str("serverName"), DomainName: str("domainName")}
}

// NewCirrusStack defines the deployment: one stack, so that `cdk deploy`
// creates or updates the whole homeserver at once.
func NewCirrusStack(scope constructs.Construct, id string, props *CirrusStackProps) awscdk.Stack {
	var sprops awscdk.StackProps
	if props != nil {
		sprops = props.StackProps
	}
	sprops.Description = jsii.String("Cirrus: a serverless Matrix homeserver")
	return awscdk.NewStack(scope, &id, &sprops)
}
