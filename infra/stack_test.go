package main

import (
	"os"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
)

// TestMain quiets jsii's end-of-life banner for the Node 20 that runs the
// CDK here, also when the tests run without scripts/test-infra.sh; the
// kernel inherits the environment when the first CDK call starts it.
func TestMain(m *testing.M) {
	if os.Getenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION") == "" {
		os.Setenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
	}
	code := m.Run()
	jsii.Close()
	os.Exit(code)
}

func TestCirrusStack_Synthesizes(t *testing.T) {
	app := awscdk.NewApp(&awscdk.AppProps{Context: &map[string]any{
		"serverName": "example.org",
		"domainName": "matrix.example.org",
	}})
	props := PropsFromContext(app)
	if props.ServerName != "example.org" || props.DomainName != "matrix.example.org" {
		t.Fatalf("props from context = %q, %q", props.ServerName, props.DomainName)
	}
	stack := NewCirrusStack(app, "Test", props)
	template := assertions.Template_FromStack(stack, nil)
	got := template.ToJSON()
	if desc, _ := (*got)["Description"].(string); desc != "Cirrus: a serverless Matrix homeserver" {
		t.Fatalf("template description = %q", desc)
	}
}
