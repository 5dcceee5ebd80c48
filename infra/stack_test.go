package main

import (
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
)

func TestCirrusStack_Synthesizes(t *testing.T) {
	defer jsii.Close()
	app := awscdk.NewApp(&awscdk.AppProps{Context: &map[string]any{"serverName": "example.org"}})
	props := PropsFromContext(app)
	if props.ServerName != "example.org" {
		t.Fatalf("serverName from context = %q", props.ServerName)
	}
	stack := NewCirrusStack(app, "Test", props)
	template := assertions.Template_FromStack(stack, nil)
	got := template.ToJSON()
	if desc, _ := (*got)["Description"].(string); desc != "Cirrus: a serverless Matrix homeserver" {
		t.Fatalf("template description = %q", desc)
	}
}
