// Package functions_test checks the Lambda entry points as built for AWS.
package functions_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLambdaBinariesLinkNoTestCode builds the dependency list of each function
// for Lambda (linux/arm64, lambda.norpc, no cgo) and refuses the embedded
// DynamoDB server and test-only packages (the tests' Matrix client among
// them): they would bloat the binary and
// slow every cold start.
func TestLambdaBinariesLinkNoTestCode(t *testing.T) {
	forbidden := []string{
		"github.com/truora/minidyn",
		"github.com/johannesboyne/gofakes3",
		"github.com/cirrus-matrix/cirrus/shared/bigbody/fakes3",
		"github.com/cirrus-matrix/cirrus/shared/store/embedded",
		"github.com/cirrus-matrix/cirrus/shared/testenv",
		"github.com/cirrus-matrix/cirrus/shared/servertest",
		"maunium.net/go/mautrix", // the tests' Matrix client
		"testing",
		"net/http/httptest",
	}
	for _, fn := range []string{"client", "federation", "sender", "tier"} {
		t.Run(fn, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", "-tags", "lambda.norpc", "./"+fn)
			cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 50 {
				t.Fatalf("only %d dependencies listed: %s", len(deps), out)
			}
			for _, dep := range deps {
				for _, bad := range forbidden {
					if dep == bad || strings.HasPrefix(dep, bad+"/") {
						t.Errorf("%s links %s", fn, dep)
					}
				}
			}
		})
	}
}
