package main

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/awslabs/goformation/v7"
)

// distDir holds stand-in function zips: the tests need no `make build`.
var distDir string

// TestMain quiets jsii's end-of-life banner for the Node 20 that runs the
// CDK here, also when the tests run without scripts/test-infra.sh; the
// kernel inherits the environment when the first CDK call starts it.
func TestMain(m *testing.M) {
	if os.Getenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION") == "" {
		os.Setenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
	}
	// The stack's environment must not depend on the machine's AWS profile.
	os.Unsetenv("CDK_DEFAULT_ACCOUNT")
	os.Unsetenv("CDK_DEFAULT_REGION")
	dir, err := os.MkdirTemp("", "cirrus-dist")
	if err != nil {
		panic(err)
	}
	for _, fn := range append(slices.Clone(Functions), TierFunction) {
		if err := os.WriteFile(filepath.Join(dir, fn+".zip"), emptyZip(fn), 0o644); err != nil {
			panic(err)
		}
	}
	distDir = dir
	code := m.Run()
	jsii.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// emptyZip is a function's stand-in code: a zip of no files, whose comment
// names the function so that each function's asset is its own.
func emptyZip(fn string) []byte {
	return append([]byte("PK\x05\x06"+strings.Repeat("\x00", 16)+string(rune(len(fn)))+"\x00"), fn...)
}

// The three deployments the tests synthesise: with a Route 53 zone (server
// name delegating to a subdomain), with nothing but a domain name, and with
// an existing certificate.
var (
	fullContext = map[string]any{
		"domainName":         "matrix.example.org",
		"serverName":         "example.org",
		"hostedZoneId":       "Z0123456789ABCDEFGHIJ",
		"hostedZoneName":     "example.org",
		"mailFrom":           "Cirrus <noreply@example.org>",
		"enableRegistration": "true",
		"enableNotifs":       "true",
		"alarmEmail":         "ops@example.org",
		"webClientLocation":  "https://chat.example.org/",
		// As -c gives it.
		"mediaRemoteCacheDays": "7",
	}
	bareContext = map[string]any{"domainName": "chat.example.net"}
	// retentionContext is fullContext with media_retention on.
	retentionContext = func() map[string]any {
		c := map[string]any{"mediaLocalLifetime": "90d", "mediaRemoteLifetime": "14d"}
		for k, v := range fullContext {
			c[k] = v
		}
		return c
	}()
	certContext = map[string]any{
		"domainName":     "matrix.example.com",
		"certificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d-1111-2222-3333-444455556666",
		// cdk.json gives booleans as booleans.
		"enableRegistration": false,
		// cdk.json gives numbers as numbers.
		"mediaRemoteCacheDays": 14.0,
	}
	// turnContext is a bare deployment with the operator's TURN servers.
	turnContext = map[string]any{
		"domainName":          "matrix.example.io",
		"turnUris":            " turn:turn.example.io:3478?transport=udp, turns:turn.example.io:5349?transport=tcp,stun:turn.example.io ",
		"turnSharedSecretArn": turnSecretArn,
	}
)

const turnSecretArn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:coturn/static-auth-AbC123"

type synthesized struct {
	template assertions.Template
	json     map[string]any
}

var (
	synthMu    sync.Mutex
	synthCache = map[string]*synthesized{}
)

// synth synthesises the stack for a context once and keeps it for every test.
func synth(t *testing.T, name string, ctx map[string]any) *synthesized {
	t.Helper()
	synthMu.Lock()
	defer synthMu.Unlock()
	if s := synthCache[name]; s != nil {
		return s
	}
	c := map[string]any{"distDir": distDir}
	for k, v := range ctx {
		c[k] = v
	}
	app := awscdk.NewApp(&awscdk.AppProps{Context: &c})
	props, err := PropsFromContext(app)
	if err != nil {
		t.Fatal(err)
	}
	stack, err := NewCirrusStack(app, "Test", props)
	if err != nil {
		t.Fatal(err)
	}
	tpl := assertions.Template_FromStack(stack, nil)
	raw, err := json.Marshal(tpl.ToJSON())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	s := &synthesized{template: tpl, json: m}
	synthCache[name] = s
	return s
}

func full(t *testing.T) *synthesized { return synth(t, "full", fullContext) }

// resources returns the template's resources of a type by logical ID.
func (s *synthesized) resources(typ string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, r := range s.json["Resources"].(map[string]any) {
		if r := r.(map[string]any); r["Type"] == typ {
			out[id] = r
		}
	}
	return out
}

// one returns the only resource of a type whose logical ID starts with prefix.
func (s *synthesized) one(t *testing.T, typ, prefix string) (string, map[string]any) {
	t.Helper()
	var found []string
	for id := range s.resources(typ) {
		if strings.HasPrefix(id, prefix) {
			found = append(found, id)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d resources of type %s named %s*, want 1: %v", len(found), typ, prefix, found)
	}
	r := s.resources(typ)[found[0]]
	props, _ := r["Properties"].(map[string]any)
	return found[0], props
}

func ref(id string) map[string]any          { return map[string]any{"Ref": id} }
func getAtt(id, attr string) []any          { return []any{id, attr} }
func js(v any) string                       { b, _ := json.Marshal(v); return string(b) }
func obj(v any) map[string]any              { m, _ := v.(map[string]any); return m }
func num(v any) float64                     { f, _ := v.(float64); return f }
func props(r map[string]any) map[string]any { return obj(r["Properties"]) }

// --- data ---

func TestTable(t *testing.T) {
	s := full(t)
	s.template.ResourceCountIs(jsii.String("AWS::DynamoDB::Table"), jsii.Number(1))
	s.template.HasResourceProperties(jsii.String("AWS::DynamoDB::Table"), map[string]any{
		"KeySchema": []any{
			map[string]any{"AttributeName": "pk", "KeyType": "HASH"},
			map[string]any{"AttributeName": "sk", "KeyType": "RANGE"},
		},
		"AttributeDefinitions": assertions.Match_ArrayWith(&[]any{
			map[string]any{"AttributeName": "pk", "AttributeType": "S"},
			map[string]any{"AttributeName": "sk", "AttributeType": "S"},
			map[string]any{"AttributeName": "gsi1pk", "AttributeType": "S"},
			map[string]any{"AttributeName": "gsi1sk", "AttributeType": "S"},
		}),
		"BillingMode": "PAY_PER_REQUEST",
		"GlobalSecondaryIndexes": []any{map[string]any{
			"IndexName": "gsi1",
			"KeySchema": []any{
				map[string]any{"AttributeName": "gsi1pk", "KeyType": "HASH"},
				map[string]any{"AttributeName": "gsi1sk", "KeyType": "RANGE"},
			},
			"Projection": map[string]any{"ProjectionType": "ALL"},
		}},
		"TimeToLiveSpecification":          map[string]any{"AttributeName": "expires_at", "Enabled": true},
		"PointInTimeRecoverySpecification": map[string]any{"PointInTimeRecoveryEnabled": true},
		"DeletionProtectionEnabled":        true,
	})
	s.template.HasResource(jsii.String("AWS::DynamoDB::Table"), map[string]any{
		"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
	})
	_, p := s.one(t, "AWS::DynamoDB::Table", "Table")
	if _, named := p["TableName"]; named {
		t.Error("the table has a fixed name: two stacks in one account would collide")
	}
}

// TestTable_MatchesStore reads shared/store.TableSchema's constants from the
// source (the infra module does not compile the homeserver) and checks that
// the stack's table is the one `cirrus serve` creates.
func TestTable_MatchesStore(t *testing.T) {
	file, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "shared", "store", "store.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	ast.Inspect(file, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[name.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
		return true
	})
	for store, infra := range map[string]string{
		"attrPK": tablePartitionKey, "attrSK": tableSortKey, "attrExpires": tableTTLAttribute,
		"gsi1": tableIndexName, "gsi1PK": tableIndexPK, "gsi1SK": tableIndexSK,
	} {
		if consts[store] != infra {
			t.Errorf("shared/store %s = %q, the stack has %q", store, consts[store], infra)
		}
	}
	// TableSchema must still be built from those constants, with one index.
	src, _ := os.ReadFile(filepath.Join("..", "shared", "store", "store.go"))
	if !strings.Contains(string(src), "Indexes:      []Index{{Name: gsi1, PartitionKey: gsi1PK, SortKey: gsi1SK}}") {
		t.Error("shared/store.TableSchema changed its indexes: update the stack and this test")
	}
}

func TestSecrets_NeverInTheTemplate(t *testing.T) {
	for name, ctx := range map[string]map[string]any{"full": fullContext, "bare": bareContext, "cert": certContext, "turn": turnContext} {
		s := synth(t, name, ctx)
		secrets := s.resources("AWS::SecretsManager::Secret")
		if len(secrets) != 2 {
			t.Fatalf("%s: %d secrets, want the signing key seed and the registration shared secret", name, len(secrets))
		}
		for id, r := range secrets {
			p := props(r)
			if _, ok := p["SecretString"]; ok {
				t.Errorf("%s: secret %s has its value in the template", name, id)
			}
			gen := obj(p["GenerateSecretString"])
			if num(gen["PasswordLength"]) < 32 || gen["ExcludePunctuation"] != true {
				t.Errorf("%s: secret %s is not generated long enough: %v", name, id, gen)
			}
		}
		raw := js(s.json)
		for _, leak := range []string{"resolve:secretsmanager", "resolve:ssm-secure", `"SecretString"`, `"SecretStringTemplate"`} {
			if strings.Contains(raw, leak) {
				t.Errorf("%s: the template contains %q", name, leak)
			}
		}
		for id, fn := range s.resources("AWS::Lambda::Function") {
			for k := range obj(obj(props(fn)["Environment"])["Variables"]) {
				if k == "CIRRUS_SIGNING_KEY" || k == "CIRRUS_SIGNING_KEY_SEED" || k == "CIRRUS_REGISTRATION_SHARED_SECRET" || k == "CIRRUS_TURN_SHARED_SECRET" || k == "CIRRUS_TURN_PASSWORD" {
					t.Errorf("%s: function %s has the secret %s in its environment", name, id, k)
				}
			}
		}
	}
	s := full(t)
	id, _ := s.one(t, "AWS::SecretsManager::Secret", "SigningKeySeed")
	if r := s.resources("AWS::SecretsManager::Secret")[id]; r["DeletionPolicy"] != "Retain" {
		t.Errorf("the signing key seed is not retained: %v", r["DeletionPolicy"])
	}
}

// --- functions ---

func TestFunctions(t *testing.T) {
	s := full(t)
	s.template.ResourceCountIs(jsii.String("AWS::Lambda::Function"), jsii.Number(4))
	table, _ := s.one(t, "AWS::DynamoDB::Table", "Table")
	queue, _ := s.one(t, "AWS::SQS::Queue", "FederationQueue")
	loadQueue, _ := s.one(t, "AWS::SQS::Queue", "LoadQueue")
	seed, _ := s.one(t, "AWS::SecretsManager::Secret", "SigningKeySeed")
	shared, _ := s.one(t, "AWS::SecretsManager::Secret", "RegistrationSharedSecret")
	configSet, _ := s.one(t, "AWS::SES::ConfigurationSet", "MailConfigurationSet")
	bucket, _ := s.one(t, "AWS::S3::Bucket", "LargeResponses")
	media, _ := s.one(t, "AWS::S3::Bucket", "Media")
	common := map[string]any{
		"CIRRUS_SERVER_NAME":                 "example.org",
		"CIRRUS_PUBLIC_BASEURL":              "https://matrix.example.org/",
		"CIRRUS_DYNAMODB_TABLE":              ref(table),
		"CIRRUS_SIGNING_KEY_SEED_SECRET_ARN": ref(seed),
	}
	with := func(extra map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range common {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	for _, want := range []struct {
		name            string
		memory, timeout float64
		env             map[string]any
	}{
		{"Client", clientMemoryMB, 30, with(map[string]any{
			"CIRRUS_QUEUE_URL":                             ref(queue),
			"CIRRUS_LONG_QUEUE_URL":                        ref(loadQueue),
			"CIRRUS_ENABLE_REGISTRATION":                   "true",
			"CIRRUS_EMAIL_NOTIF_FROM":                      "Cirrus <noreply@example.org>",
			"CIRRUS_EMAIL_SES_CONFIGURATION_SET":           ref(configSet),
			"CIRRUS_EMAIL_ENABLE_NOTIFS":                   "true",
			"CIRRUS_REGISTRATION_SHARED_SECRET_SECRET_ARN": ref(shared),
			"CIRRUS_WEB_CLIENT_LOCATION":                   "https://chat.example.org/",
			"CIRRUS_LARGE_RESPONSE_BUCKET":                 ref(bucket),
			"CIRRUS_MEDIA_BUCKET":                          ref(media),
		})},
		{"Federation", federationMemoryMB, federationTimeout, with(map[string]any{"CIRRUS_QUEUE_URL": ref(queue), "CIRRUS_LONG_QUEUE_URL": ref(loadQueue),
			"CIRRUS_LARGE_RESPONSE_BUCKET": ref(bucket), "CIRRUS_MEDIA_BUCKET": ref(media)})},
		{"Sender", senderMemoryMB, senderTimeoutSeconds, with(map[string]any{"CIRRUS_QUEUE_URL": ref(queue),
			"CIRRUS_EMAIL_NOTIF_FROM": "Cirrus <noreply@example.org>", "CIRRUS_EMAIL_SES_CONFIGURATION_SET": ref(configSet),
			"CIRRUS_EMAIL_ENABLE_NOTIFS": "true"})},
		{"Loader", loaderMemoryMB, 900, with(map[string]any{"CIRRUS_QUEUE_URL": ref(queue), "CIRRUS_LONG_QUEUE_URL": ref(loadQueue)})},
	} {
		_, p := s.one(t, "AWS::Lambda::Function", want.name+"Function")
		if js(p["Architectures"]) != `["arm64"]` || p["Runtime"] != "provided.al2023" || p["Handler"] != "bootstrap" {
			t.Errorf("%s: architectures %v, runtime %v, handler %v", want.name, p["Architectures"], p["Runtime"], p["Handler"])
		}
		if num(p["MemorySize"]) != want.memory || num(p["Timeout"]) != want.timeout {
			t.Errorf("%s: memory %v, timeout %v; want %v, %v", want.name, p["MemorySize"], p["Timeout"], want.memory, want.timeout)
		}
		if got := obj(obj(p["Environment"])["Variables"]); !reflect.DeepEqual(got, want.env) {
			t.Errorf("%s: environment\n got %s\nwant %s", want.name, js(got), js(want.env))
		}
		code := obj(p["Code"])
		if key, _ := code["S3Key"].(string); !strings.HasSuffix(key, ".zip") {
			t.Errorf("%s: code %v is not the zip asset", want.name, code)
		}
		logGroup, _ := s.one(t, "AWS::Logs::LogGroup", want.name+"Logs")
		if !reflect.DeepEqual(obj(p["LoggingConfig"])["LogGroup"], ref(logGroup)) {
			t.Errorf("%s: logs go to %v, not its own log group", want.name, p["LoggingConfig"])
		}
		_, lg := s.one(t, "AWS::Logs::LogGroup", want.name+"Logs")
		if num(lg["RetentionInDays"]) != 30 {
			t.Errorf("%s: log retention %v days, want 30", want.name, lg["RetentionInDays"])
		}
	}
	// The loader is the sender's build: the same asset, so `make build`
	// makes no zip for it.
	_, sender := s.one(t, "AWS::Lambda::Function", "SenderFunction")
	_, loader := s.one(t, "AWS::Lambda::Function", "LoaderFunction")
	if key := obj(sender["Code"])["S3Key"]; key == nil || !reflect.DeepEqual(obj(loader["Code"])["S3Key"], key) {
		t.Errorf("loader code %v, want the sender's %v", loader["Code"], sender["Code"])
	}
	if slices.Contains(Functions, "loader") {
		t.Errorf("Functions %v names the loader, which has no build of its own", Functions)
	}
	if loaderMemoryMB < senderMemoryMB {
		t.Errorf("loader memory %d MB is under the sender's %d MB", loaderMemoryMB, senderMemoryMB)
	}
	if clientTimeoutSeconds <= SyncLongPollCap || clientTimeoutSeconds > 30 {
		t.Errorf("client timeout %d s must be above the /sync cap (%d s) and at most API Gateway's 30 s", clientTimeoutSeconds, SyncLongPollCap)
	}
}

// statements returns the IAM statements of the role a function runs as,
// with the role's managed policies.
func (s *synthesized) statements(t *testing.T, fnPrefix string) ([]map[string]any, any) {
	t.Helper()
	_, fn := s.one(t, "AWS::Lambda::Function", fnPrefix+"Function")
	roleID := obj(fn["Role"])["Fn::GetAtt"].([]any)[0].(string)
	role := props(s.resources("AWS::IAM::Role")[roleID])
	var out []map[string]any
	for _, p := range s.resources("AWS::IAM::Policy") {
		pp := props(p)
		if !slices.ContainsFunc(pp["Roles"].([]any), func(r any) bool { return reflect.DeepEqual(r, ref(roleID)) }) {
			continue
		}
		for _, st := range obj(pp["PolicyDocument"])["Statement"].([]any) {
			out = append(out, st.(map[string]any))
		}
	}
	return out, role["ManagedPolicyArns"]
}

// grant is what a statement allows, in a form tests compare: sorted actions
// on sorted resources, resources written as the JSON of their CFN value.
func grant(st map[string]any) string {
	var actions, resources []string
	switch a := st["Action"].(type) {
	case string:
		actions = []string{a}
	case []any:
		for _, x := range a {
			actions = append(actions, x.(string))
		}
	}
	switch r := st["Resource"].(type) {
	case []any:
		for _, x := range r {
			resources = append(resources, js(x))
		}
	default:
		resources = []string{js(r)}
	}
	sort.Strings(actions)
	sort.Strings(resources)
	return strings.Join(actions, ",") + " on " + strings.Join(resources, " ")
}

func TestIAM_LeastPrivilege(t *testing.T) {
	s := full(t)
	table, _ := s.one(t, "AWS::DynamoDB::Table", "Table")
	queue, _ := s.one(t, "AWS::SQS::Queue", "FederationQueue")
	loadQueue, _ := s.one(t, "AWS::SQS::Queue", "LoadQueue")
	seed, _ := s.one(t, "AWS::SecretsManager::Secret", "SigningKeySeed")
	shared, _ := s.one(t, "AWS::SecretsManager::Secret", "RegistrationSharedSecret")
	identity, _ := s.one(t, "AWS::SES::EmailIdentity", "MailIdentity")
	configSet, _ := s.one(t, "AWS::SES::ConfigurationSet", "MailConfigurationSet")
	tableArn := map[string]any{"Fn::GetAtt": getAtt(table, "Arn")}
	indexArn := map[string]any{"Fn::Join": []any{"", []any{tableArn, "/index/*"}}}
	sesArn := func(kind, id string) map[string]any {
		return map[string]any{"Fn::Join": []any{"", []any{"arn:", ref("AWS::Partition"), ":ses:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":" + kind + "/", ref(id)}}}
	}
	g := func(actions []string, resources ...any) string {
		st := map[string]any{"Action": func() []any {
			var a []any
			for _, x := range actions {
				a = append(a, x)
			}
			return a
		}(), "Resource": resources}
		return grant(st)
	}
	logs := func(fn string) string {
		id, _ := s.one(t, "AWS::Logs::LogGroup", fn+"Logs")
		return g([]string{"logs:CreateLogStream", "logs:PutLogEvents"}, map[string]any{"Fn::GetAtt": getAtt(id, "Arn")})
	}
	items := g(tableItemActions, tableArn)
	queries := g(tableQueryActions, tableArn, indexArn)
	seedRead := g([]string{"secretsmanager:GetSecretValue"}, ref(seed))
	send := g([]string{"sqs:SendMessage"}, map[string]any{"Fn::GetAtt": getAtt(queue, "Arn")})
	sendLoad := g([]string{"sqs:SendMessage"}, map[string]any{"Fn::GetAtt": getAtt(loadQueue, "Arn")})
	consume := func(q string) string {
		return g([]string{"sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}, map[string]any{"Fn::GetAtt": getAtt(q, "Arn")})
	}
	bucket, _ := s.one(t, "AWS::S3::Bucket", "LargeResponses")
	large := g([]string{"s3:PutObject", "s3:GetObject"},
		map[string]any{"Fn::Join": []any{"", []any{map[string]any{"Fn::GetAtt": getAtt(bucket, "Arn")}, "/" + LargeResponsePrefix + "*"}}})
	mediaBucket, _ := s.one(t, "AWS::S3::Bucket", "Media")
	mediaObjects := map[string]any{"Fn::Join": []any{"", []any{map[string]any{"Fn::GetAtt": getAtt(mediaBucket, "Arn")}, "/*"}}}
	// Mail goes from the identity with the configuration set, and from
	// nothing else: not "*".
	sendMail := g([]string{"ses:SendEmail"}, sesArn("identity", identity), sesArn("configuration-set", configSet))
	want := map[string][]string{
		"Client": {logs("Client"), items, queries, seedRead, send, sendLoad, large,
			g([]string{"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}, mediaObjects),
			g([]string{"s3:ListBucket"}, map[string]any{"Fn::GetAtt": getAtt(mediaBucket, "Arn")}),
			g([]string{"secretsmanager:GetSecretValue"}, ref(shared)),
			sendMail},
		"Federation": {logs("Federation"), items, queries, seedRead, send, sendLoad, large,
			g([]string{"s3:GetObject", "s3:PutObject"}, mediaObjects),
			g([]string{"s3:ListBucket"}, map[string]any{"Fn::GetAtt": getAtt(mediaBucket, "Arn")})},
		"Sender": {logs("Sender"), items, queries, seedRead, send, consume(queue), sendMail},
		"Loader": {logs("Loader"), items, queries, seedRead, send, consume(loadQueue)},
	}
	for fn, wantGrants := range want {
		statements, managed := s.statements(t, fn)
		if managed != nil {
			t.Errorf("%s: role has managed policies %v", fn, managed)
		}
		var got []string
		for _, st := range statements {
			if st["Effect"] != "Allow" {
				t.Errorf("%s: statement %v", fn, st)
			}
			got = append(got, grant(st))
		}
		sort.Strings(got)
		sort.Strings(wantGrants)
		if !reflect.DeepEqual(got, wantGrants) {
			t.Errorf("%s: IAM statements\n got %s\nwant %s", fn, strings.Join(got, "\n     "), strings.Join(wantGrants, "\n     "))
		}
		for _, a := range tableItemActions {
			if strings.Contains(a, "Scan") || strings.Contains(a, "*") {
				t.Errorf("table action %s is broader than needed", a)
			}
		}
	}
	if raw := js(s.resources("AWS::IAM::Policy")); strings.Contains(raw, `"Resource":"*"`) || strings.Contains(raw, `"Action":"*"`) {
		t.Error("a policy allows everything on something or something on everything")
	}
}

// TestTURN checks that the operator's TURN servers reach the client function
// alone, and that only it may read their secret, by its ARN and nothing wider.
func TestTURN(t *testing.T) {
	s := synth(t, "turn", turnContext)
	_, client := s.one(t, "AWS::Lambda::Function", "ClientFunction")
	env := obj(obj(client["Environment"])["Variables"])
	if got, want := env["CIRRUS_TURN_URIS"], "turn:turn.example.io:3478?transport=udp,turns:turn.example.io:5349?transport=tcp,stun:turn.example.io"; got != want {
		t.Errorf("CIRRUS_TURN_URIS = %v, want %q", got, want)
	}
	if got := env["CIRRUS_TURN_SHARED_SECRET_SECRET_ARN"]; got != turnSecretArn {
		t.Errorf("CIRRUS_TURN_SHARED_SECRET_SECRET_ARN = %v, want %q", got, turnSecretArn)
	}
	read := grant(map[string]any{"Action": "secretsmanager:GetSecretValue", "Resource": turnSecretArn})
	statements, _ := s.statements(t, "Client")
	var found int
	for _, st := range statements {
		if grant(st) == read {
			found++
		}
	}
	if found != 1 {
		t.Errorf("the client may read the TURN secret in %d statements, want 1", found)
	}
	for _, fn := range []string{"Federation", "Sender", "Loader"} {
		_, f := s.one(t, "AWS::Lambda::Function", fn+"Function")
		for k := range obj(obj(f["Environment"])["Variables"]) {
			if strings.HasPrefix(k, "CIRRUS_TURN_") {
				t.Errorf("%s has %s in its environment", fn, k)
			}
		}
		statements, _ := s.statements(t, fn)
		if strings.Contains(js(statements), turnSecretArn) {
			t.Errorf("%s may read the TURN secret: %s", fn, js(statements))
		}
	}
	// The imported secret is the operator's: the stack makes none more.
	if n := len(s.resources("AWS::SecretsManager::Secret")); n != 2 {
		t.Errorf("%d secrets, want the stack's 2", n)
	}

	// Without the context values, no trace of TURN.
	for name, ctx := range map[string]map[string]any{"full": fullContext, "bare": bareContext} {
		raw := js(synth(t, name, ctx).json)
		for _, w := range []string{"CIRRUS_TURN_", "TurnSharedSecret"} {
			if strings.Contains(raw, w) {
				t.Errorf("%s: the template mentions %s without TURN context values", name, w)
			}
		}
	}
}

// --- API ---

func TestAPI(t *testing.T) {
	s := full(t)
	s.template.ResourceCountIs(jsii.String("AWS::ApiGatewayV2::Api"), jsii.Number(1))
	s.template.HasResourceProperties(jsii.String("AWS::ApiGatewayV2::Api"), map[string]any{"ProtocolType": "HTTP"})
	apiID, _ := s.one(t, "AWS::ApiGatewayV2::Api", "Api")
	integrationOf := map[string]string{} // integration ID -> function ID
	for id, r := range s.resources("AWS::ApiGatewayV2::Integration") {
		p := props(r)
		if p["IntegrationType"] != "AWS_PROXY" || p["PayloadFormatVersion"] != "2.0" {
			t.Errorf("integration %s: %v", id, js(p))
		}
		integrationOf[id] = obj(p["IntegrationUri"])["Fn::GetAtt"].([]any)[0].(string)
	}
	client, _ := s.one(t, "AWS::Lambda::Function", "ClientFunction")
	federation, _ := s.one(t, "AWS::Lambda::Function", "FederationFunction")
	want := map[string]string{}
	for _, r := range ClientRoutes {
		want["ANY "+r] = client
	}
	for _, r := range FederationRoutes {
		want["ANY "+r] = federation
	}
	got := map[string]string{}
	for _, r := range s.resources("AWS::ApiGatewayV2::Route") {
		p := props(r)
		target := js(p["Target"])
		for integ, fn := range integrationOf {
			if strings.Contains(target, `"`+integ+`"`) {
				got[p["RouteKey"].(string)] = fn
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("routes\n got %v\nwant %v", got, want)
	}
	for _, r := range []string{"ANY /", "ANY /_matrix/client/{proxy+}", "ANY /_matrix/media/{proxy+}", "ANY /_synapse/admin/{proxy+}", "ANY /_synapse/client/{proxy+}",
		"ANY /.well-known/matrix/{proxy+}", "ANY /_matrix/federation/{proxy+}", "ANY /_matrix/key/{proxy+}"} {
		if _, ok := got[r]; !ok {
			t.Errorf("route %s is missing", r)
		}
	}
	// API Gateway may invoke each function, from this API only. SNS's
	// permission to invoke the sender is TestMailEvents's.
	for id, r := range s.resources("AWS::Lambda::Permission") {
		p := props(r)
		if p["Principal"] == "sns.amazonaws.com" {
			continue
		}
		if p["Principal"] != "apigateway.amazonaws.com" || !strings.Contains(js(p["SourceArn"]), `"Ref":"`+apiID+`"`) {
			t.Errorf("permission %s: %s", id, js(p))
		}
	}

	cert, _ := s.one(t, "AWS::CertificateManager::Certificate", "Certificate")
	s.template.HasResourceProperties(jsii.String("AWS::CertificateManager::Certificate"), map[string]any{
		"DomainName": "matrix.example.org", "ValidationMethod": "DNS",
		"DomainValidationOptions": []any{map[string]any{"DomainName": "matrix.example.org", "HostedZoneId": "Z0123456789ABCDEFGHIJ"}},
	})
	domainID, domain := s.one(t, "AWS::ApiGatewayV2::DomainName", "ApiDomain")
	if domain["DomainName"] != "matrix.example.org" {
		t.Errorf("custom domain %v", domain["DomainName"])
	}
	cfg := domain["DomainNameConfigurations"].([]any)[0].(map[string]any)
	if !reflect.DeepEqual(cfg["CertificateArn"], ref(cert)) || cfg["EndpointType"] != "REGIONAL" || cfg["SecurityPolicy"] != "TLS_1_2" {
		t.Errorf("custom domain configuration %s", js(cfg))
	}
	stageID, stage := s.one(t, "AWS::ApiGatewayV2::Stage", "DefaultStage")
	if stage["StageName"] != "$default" || stage["AutoDeploy"] != true {
		t.Errorf("stage %s", js(stage))
	}
	throttle := obj(stage["DefaultRouteSettings"])
	if num(throttle["ThrottlingRateLimit"]) != apiRateLimit || num(throttle["ThrottlingBurstLimit"]) != apiBurstLimit {
		t.Errorf("throttling %v", throttle)
	}
	accessLogs, _ := s.one(t, "AWS::Logs::LogGroup", "ApiAccessLogs")
	als := obj(stage["AccessLogSettings"])
	if !reflect.DeepEqual(als["DestinationArn"], map[string]any{"Fn::GetAtt": getAtt(accessLogs, "Arn")}) {
		t.Errorf("access logs go to %v", als["DestinationArn"])
	}
	var line map[string]string
	if err := json.Unmarshal([]byte(als["Format"].(string)), &line); err != nil || line["status"] != "$context.status" || line["routeKey"] != "$context.routeKey" {
		t.Errorf("access log format is not a JSON line with status and route: %v %v", err, als["Format"])
	}
	// Query strings can hold access tokens, paths registration tokens.
	for _, secretful := range []string{"querystring", "requestOverride", "$context.path"} {
		if strings.Contains(als["Format"].(string), secretful) {
			t.Errorf("access logs record %s, which can hold secrets", secretful)
		}
	}
	mappingID, mapping := s.one(t, "AWS::ApiGatewayV2::ApiMapping", "ApiMapping")
	if deps := js(s.resources("AWS::ApiGatewayV2::ApiMapping")[mappingID]["DependsOn"]); !strings.Contains(deps, stageID) {
		t.Errorf("the API mapping does not wait for the stage: DependsOn %s", deps)
	}
	if !reflect.DeepEqual(mapping["ApiId"], ref(apiID)) || !reflect.DeepEqual(mapping["DomainName"], ref(domainID)) || mapping["Stage"] != "$default" {
		t.Errorf("API mapping %s", js(mapping))
	}
}

// --- federation queue ---

func TestQueue(t *testing.T) {
	s := full(t)
	dlq, _ := s.one(t, "AWS::SQS::Queue", "FederationDeadLetterQueue")
	queue, q := s.one(t, "AWS::SQS::Queue", "FederationQueue5")
	redrive := obj(q["RedrivePolicy"])
	if num(redrive["maxReceiveCount"]) != queueMaxReceiveCount || !reflect.DeepEqual(redrive["deadLetterTargetArn"], map[string]any{"Fn::GetAtt": getAtt(dlq, "Arn")}) {
		t.Errorf("redrive policy %s", js(redrive))
	}
	_, sender := s.one(t, "AWS::Lambda::Function", "SenderFunction")
	if num(q["VisibilityTimeout"]) < 6*num(sender["Timeout"]) {
		t.Errorf("visibility timeout %v s is under six times the sender's timeout %v s", q["VisibilityTimeout"], sender["Timeout"])
	}
	senderID, _ := s.one(t, "AWS::Lambda::Function", "SenderFunction")
	_, esm := s.one(t, "AWS::Lambda::EventSourceMapping", "Sender")
	if !reflect.DeepEqual(esm["EventSourceArn"], map[string]any{"Fn::GetAtt": getAtt(queue, "Arn")}) ||
		!reflect.DeepEqual(esm["FunctionName"], ref(senderID)) ||
		js(esm["FunctionResponseTypes"]) != `["ReportBatchItemFailures"]` {
		t.Errorf("event source mapping %s", js(esm))
	}
	s.template.ResourceCountIs(jsii.String("AWS::Lambda::EventSourceMapping"), jsii.Number(2))
}

// TestLoadQueue checks the queue of the jobs that outlast the sender (a
// room's whole state after a partial-state join): encrypted, TLS only,
// failures to the federation dead-letter queue, drained one job at a time
// by the loader, long enough invisible that no second loader takes a job
// still running.
func TestLoadQueue(t *testing.T) {
	s := full(t)
	s.template.ResourceCountIs(jsii.String("AWS::SQS::Queue"), jsii.Number(3))
	dlq, _ := s.one(t, "AWS::SQS::Queue", "FederationDeadLetterQueue")
	queue, q := s.one(t, "AWS::SQS::Queue", "LoadQueue")
	redrive := obj(q["RedrivePolicy"])
	if num(redrive["maxReceiveCount"]) != queueMaxReceiveCount || !reflect.DeepEqual(redrive["deadLetterTargetArn"], map[string]any{"Fn::GetAtt": getAtt(dlq, "Arn")}) {
		t.Errorf("redrive policy %s", js(redrive))
	}
	if q["SqsManagedSseEnabled"] != true || num(q["MessageRetentionPeriod"]) != 4*24*3600 {
		t.Errorf("load queue %s, want SQS-managed encryption and 4 days' retention", js(q))
	}
	var ssl bool
	for _, r := range s.resources("AWS::SQS::QueuePolicy") {
		p := props(r)
		if reflect.DeepEqual(p["Queues"], []any{ref(queue)}) && strings.Contains(js(p["PolicyDocument"]), `"aws:SecureTransport":"false"`) {
			ssl = true
		}
	}
	if !ssl {
		t.Error("the load queue accepts requests without TLS")
	}
	loaderID, loader := s.one(t, "AWS::Lambda::Function", "LoaderFunction")
	if num(q["VisibilityTimeout"]) < 6*num(loader["Timeout"]) || num(loader["Timeout"]) != 900 {
		t.Errorf("visibility timeout %v s, loader timeout %v s; want 900 s and at least six times it", q["VisibilityTimeout"], loader["Timeout"])
	}
	var found bool
	for _, r := range s.resources("AWS::Lambda::EventSourceMapping") {
		esm := props(r)
		if !reflect.DeepEqual(esm["EventSourceArn"], map[string]any{"Fn::GetAtt": getAtt(queue, "Arn")}) {
			continue
		}
		found = true
		if !reflect.DeepEqual(esm["FunctionName"], ref(loaderID)) || num(esm["BatchSize"]) != 1 ||
			js(esm["FunctionResponseTypes"]) != `["ReportBatchItemFailures"]` {
			t.Errorf("load queue event source mapping %s", js(esm))
		}
	}
	if !found {
		t.Error("nothing drains the load queue")
	}
}

// --- mail ---

func TestMail(t *testing.T) {
	s := full(t)
	configSet, _ := s.one(t, "AWS::SES::ConfigurationSet", "MailConfigurationSet")
	_, identity := s.one(t, "AWS::SES::EmailIdentity", "MailIdentity")
	if identity["EmailIdentity"] != "example.org" || !reflect.DeepEqual(obj(identity["ConfigurationSetAttributes"])["ConfigurationSetName"], ref(configSet)) {
		t.Errorf("email identity %s", js(identity))
	}
	dkim := 0
	for _, r := range s.resources("AWS::Route53::RecordSet") {
		if p := props(r); p["Type"] == "CNAME" && strings.Contains(js(p["Name"]), "DkimDNSTokenName") {
			dkim++
		}
	}
	if dkim != 3 {
		t.Errorf("%d DKIM records in the zone, want 3", dkim)
	}
	bare := synth(t, "bare", bareContext)
	_, identity = bare.one(t, "AWS::SES::EmailIdentity", "MailIdentity")
	if identity["EmailIdentity"] != "chat.example.net" {
		t.Errorf("without mailFrom, the identity is %v, want the server name's domain", identity["EmailIdentity"])
	}
	if n := len(bare.resources("AWS::Route53::RecordSet")); n != 0 {
		t.Errorf("%d DNS records without a hosted zone", n)
	}
}

// TestMailEvents checks the way of bounces and complaints: the
// configuration set publishes them (and nothing else) to a topic, SNS
// invokes the sender with them, from that topic only, and the sender may
// send mail from the identity alone.
func TestMailEvents(t *testing.T) {
	s := full(t)
	configSet, _ := s.one(t, "AWS::SES::ConfigurationSet", "MailConfigurationSet")
	topic, _ := s.one(t, "AWS::SNS::Topic", "MailEventsTopic")
	sender, _ := s.one(t, "AWS::Lambda::Function", "SenderFunction")
	_, dest := s.one(t, "AWS::SES::ConfigurationSetEventDestination", "MailConfigurationSetMailEvents")
	if !reflect.DeepEqual(dest["ConfigurationSetName"], ref(configSet)) {
		t.Errorf("event destination of %v, want the configuration set %s", dest["ConfigurationSetName"], configSet)
	}
	ed := obj(dest["EventDestination"])
	if ed["Enabled"] != true || !reflect.DeepEqual(obj(ed["SnsDestination"])["TopicARN"], ref(topic)) {
		t.Errorf("event destination %s, want enabled, to the topic %s", js(ed), topic)
	}
	events := strSlice(ed["MatchingEventTypes"])
	sort.Strings(events)
	if !reflect.DeepEqual(events, []string{"bounce", "complaint"}) {
		t.Errorf("matching event types %v, want bounce and complaint", events)
	}
	// SES may publish to the topic, for this account's configuration set.
	policies := 0
	for _, r := range s.resources("AWS::SNS::TopicPolicy") {
		p := props(r)
		if !reflect.DeepEqual(p["Topics"], []any{ref(topic)}) {
			continue
		}
		policies++
		raw := js(obj(p["PolicyDocument"])["Statement"])
		for _, want := range []string{`"Action":"sns:Publish"`, `"Service":"ses.amazonaws.com"`, `"AWS:SourceAccount"`, `:configuration-set/`} {
			if !strings.Contains(raw, want) {
				t.Errorf("mail events topic policy %s lacks %s", raw, want)
			}
		}
	}
	if policies != 1 {
		t.Errorf("%d policies on the mail events topic, want 1 letting SES publish", policies)
	}
	s.template.HasResourceProperties(jsii.String("AWS::SNS::Subscription"), map[string]any{
		"Protocol": "lambda", "TopicArn": ref(topic), "Endpoint": map[string]any{"Fn::GetAtt": getAtt(sender, "Arn")},
	})
	subs := 0
	for _, r := range s.resources("AWS::SNS::Subscription") {
		if reflect.DeepEqual(props(r)["TopicArn"], ref(topic)) {
			subs++
		}
	}
	if subs != 1 {
		t.Errorf("%d subscriptions to the mail events topic, want the sender's alone", subs)
	}
	s.template.HasResourceProperties(jsii.String("AWS::Lambda::Permission"), map[string]any{
		"Action": "lambda:InvokeFunction", "Principal": "sns.amazonaws.com", "SourceArn": ref(topic),
		"FunctionName": map[string]any{"Fn::GetAtt": getAtt(sender, "Arn")},
	})
	// The sender's right to send is scoped as the client's is (the whole
	// statement is TestIAM_LeastPrivilege's): never on "*".
	statements, _ := s.statements(t, "Sender")
	found := false
	for _, st := range statements {
		if !strings.Contains(js(st["Action"]), "ses:") {
			continue
		}
		found = true
		if raw := js(st["Resource"]); strings.Contains(raw, `"*"`) || !strings.Contains(raw, ":identity/") {
			t.Errorf("sender's SES statement on %s, want the identity and configuration set only", raw)
		}
	}
	if !found {
		t.Error("the sender may not send mail")
	}
}

// --- DNS ---

func TestDNS(t *testing.T) {
	s := full(t)
	domainID, _ := s.one(t, "AWS::ApiGatewayV2::DomainName", "ApiDomain")
	alias := map[string]any{
		"DNSName":      map[string]any{"Fn::GetAtt": getAtt(domainID, "RegionalDomainName")},
		"HostedZoneId": map[string]any{"Fn::GetAtt": getAtt(domainID, "RegionalHostedZoneId")},
	}
	for _, typ := range []string{"A", "AAAA"} {
		s.template.HasResourceProperties(jsii.String("AWS::Route53::RecordSet"), map[string]any{
			"Name": "matrix.example.org.", "Type": typ, "HostedZoneId": "Z0123456789ABCDEFGHIJ", "AliasTarget": alias,
		})
	}
	// Both services, for servers before and since v1.8 of the spec, to the
	// same target.
	srv := map[string]any{}
	for _, r := range s.resources("AWS::Route53::RecordSet") {
		if p := props(r); p["Type"] == "SRV" {
			srv[p["Name"].(string)] = p["ResourceRecords"]
		}
	}
	want := map[string]any{
		"_matrix-fed._tcp.example.org.": []any{"10 0 443 matrix.example.org"},
		"_matrix._tcp.example.org.":     []any{"10 0 443 matrix.example.org"},
	}
	if !reflect.DeepEqual(srv, want) {
		t.Errorf("SRV records\n got %s\nwant %s", js(srv), js(want))
	}
	s.template.HasResourceProperties(jsii.String("AWS::Route53::RecordSet"), map[string]any{
		"Name": "_matrix._tcp.example.org.", "Type": "SRV", "HostedZoneId": "Z0123456789ABCDEFGHIJ", "TTL": "3600",
	})
}

func TestBareAndImportedCertificate(t *testing.T) {
	bare := synth(t, "bare", bareContext)
	bare.template.HasResourceProperties(jsii.String("AWS::CertificateManager::Certificate"), map[string]any{
		"DomainName": "chat.example.net", "ValidationMethod": "DNS",
		"DomainValidationOptions": assertions.Match_Absent(),
	})
	_, fn := bare.one(t, "AWS::Lambda::Function", "ClientFunction")
	env := obj(obj(fn["Environment"])["Variables"])
	if env["CIRRUS_SERVER_NAME"] != "chat.example.net" || env["CIRRUS_ENABLE_REGISTRATION"] != "false" || env["CIRRUS_EMAIL_NOTIF_FROM"] != "noreply@chat.example.net" ||
		env["CIRRUS_EMAIL_ENABLE_NOTIFS"] != "false" {
		t.Errorf("defaults in the environment: %s", js(env))
	}
	// No alarm mail without alarmEmail; the sender's subscription to mail
	// events is there always.
	for id, r := range bare.resources("AWS::SNS::Subscription") {
		if p := props(r); p["Protocol"] != "lambda" {
			t.Errorf("subscription %s without alarmEmail: %s", id, js(p))
		}
	}

	cert := synth(t, "cert", certContext)
	cert.template.ResourceCountIs(jsii.String("AWS::CertificateManager::Certificate"), jsii.Number(0))
	_, domain := cert.one(t, "AWS::ApiGatewayV2::DomainName", "ApiDomain")
	if got := domain["DomainNameConfigurations"].([]any)[0].(map[string]any)["CertificateArn"]; got != certContext["certificateArn"] {
		t.Errorf("custom domain certificate %v, want the given ARN", got)
	}
}

// --- operations ---

func TestAlarms(t *testing.T) {
	s := full(t)
	topic, _ := s.one(t, "AWS::SNS::Topic", "AlarmTopic")
	s.template.HasResourceProperties(jsii.String("AWS::SNS::Subscription"), map[string]any{
		"Protocol": "email", "Endpoint": "ops@example.org", "TopicArn": ref(topic),
	})
	alarms := s.resources("AWS::CloudWatch::Alarm")
	metrics := map[string]bool{}
	for id, r := range alarms {
		p := props(r)
		if !reflect.DeepEqual(p["AlarmActions"], []any{ref(topic)}) {
			t.Errorf("alarm %s does not notify the topic: %v", id, p["AlarmActions"])
		}
		if p["TreatMissingData"] != "notBreaching" {
			t.Errorf("alarm %s treats missing data as %v", id, p["TreatMissingData"])
		}
		raw := js(p)
		for _, m := range []string{"Errors", "ApproximateNumberOfMessagesVisible", "ReadThrottleEvents", "WriteThrottleEvents", "5xx"} {
			if strings.Contains(raw, `"MetricName":"`+m+`"`) {
				metrics[m] = true
			}
		}
	}
	if len(alarms) != 7 {
		t.Errorf("%d alarms, want 7 (four functions, dead letters, throttling, 5xx rate)", len(alarms))
	}
	for _, m := range []string{"Errors", "ApproximateNumberOfMessagesVisible", "ReadThrottleEvents", "WriteThrottleEvents", "5xx"} {
		if !metrics[m] {
			t.Errorf("no alarm on %s", m)
		}
	}
	dlq, _ := s.one(t, "AWS::SQS::Queue", "FederationDeadLetterQueue")
	s.template.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{
		"MetricName": "ApproximateNumberOfMessagesVisible", "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
		"Dimensions": []any{map[string]any{"Name": "QueueName", "Value": map[string]any{"Fn::GetAtt": getAtt(dlq, "QueueName")}}},
	})
	for _, fn := range []string{"Client", "Federation", "Sender", "Loader"} {
		id, _ := s.one(t, "AWS::Lambda::Function", fn+"Function")
		s.template.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{
			"MetricName": "Errors", "Namespace": "AWS/Lambda", "Threshold": 1,
			"Dimensions": []any{map[string]any{"Name": "FunctionName", "Value": ref(id)}},
		})
	}
}

func TestOutputs(t *testing.T) {
	s := full(t)
	outputs := obj(s.json["Outputs"])
	domainID, _ := s.one(t, "AWS::ApiGatewayV2::DomainName", "ApiDomain")
	table, _ := s.one(t, "AWS::DynamoDB::Table", "Table")
	shared, _ := s.one(t, "AWS::SecretsManager::Secret", "RegistrationSharedSecret")
	for name, want := range map[string]any{
		"ApiDomainTarget": map[string]any{"Fn::GetAtt": getAtt(domainID, "RegionalDomainName")},
		"TableName":       ref(table),
		"FirstAdminCommand": map[string]any{"Fn::Join": []any{"", []any{
			"cirrus register -secret-arn ", ref(shared), " -admin -u admin https://matrix.example.org"}}},
	} {
		if got := obj(outputs[name])["Value"]; !reflect.DeepEqual(got, want) {
			t.Errorf("output %s = %s, want %s", name, js(got), js(want))
		}
	}
}

// TestGoformation parses each synthesised template with goformation, as a
// CloudFormation consumer other than the CDK would.
func TestGoformation(t *testing.T) {
	for name, ctx := range map[string]map[string]any{"full": fullContext, "bare": bareContext, "cert": certContext} {
		s := synth(t, name, ctx)
		raw, _ := json.Marshal(s.json)
		tpl, err := goformation.ParseJSON(raw)
		if err != nil {
			t.Fatalf("%s: goformation: %v", name, err)
		}
		if n := len(tpl.GetAllLambdaFunctionResources()); n != 4 {
			t.Errorf("%s: goformation sees %d functions", name, n)
		}
		if n := len(tpl.GetAllDynamoDBTableResources()); n != 1 {
			t.Errorf("%s: goformation sees %d tables", name, n)
		}
		if len(tpl.Resources) != len(obj(s.json["Resources"])) {
			t.Errorf("%s: goformation read %d resources of %d", name, len(tpl.Resources), len(obj(s.json["Resources"])))
		}
		for id, fn := range tpl.GetAllLambdaFunctionResources() {
			if fn.Runtime == nil || *fn.Runtime != "provided.al2023" {
				t.Errorf("%s: goformation reads %s's runtime as %v", name, id, fn.Runtime)
			}
		}
	}
}

// --- context values ---

func TestContext_Errors(t *testing.T) {
	ok := map[string]any{"domainName": "matrix.example.org", "distDir": "<dist>"}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range ok {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	for _, tc := range []struct {
		name string
		ctx  map[string]any
		want []string
	}{
		{"no domain", with("domainName", nil), []string{"domainName is missing", "-c domainName="}},
		{"bad domain", with("domainName", "https://matrix.example.org/"), []string{`domainName="https://matrix.example.org/" is not a DNS host name`}},
		{"server name with port", with("serverName", "example.org:8448"), []string{`serverName="example.org:8448"`, "without a port"}},
		{"zone id alone", with("hostedZoneId", "Z0123456789ABCDEFGHIJ"), []string{"hostedZoneId and hostedZoneName go together"}},
		{"bad zone id", with("hostedZoneId", "example.org", "hostedZoneName", "example.org"), []string{`hostedZoneId="example.org" is not a Route 53 zone ID`}},
		{"domain outside zone", with("hostedZoneId", "Z0123456789ABCDEFGHIJ", "hostedZoneName", "example.com"), []string{`domainName="matrix.example.org" is not in the hosted zone "example.com"`}},
		{"bad certificate", with("certificateArn", "arn:aws:iam::123456789012:server-certificate/x"), []string{"certificateArn", "is not an ACM certificate ARN"}},
		{"bad mail", with("mailFrom", "noreply"), []string{`mailFrom="noreply" is not a mail address`}},
		{"bad alarm mail", with("alarmEmail", "ops at example.org"), []string{`alarmEmail="ops at example.org" is not a mail address`}},
		{"bad web client", with("webClientLocation", "app.element.io"), []string{`webClientLocation="app.element.io" is not an absolute http(s) URL`}},
		{"bad registration", with("enableRegistration", "yes please"), []string{`enableRegistration="yes please" is not true or false`}},
		{"bad notifs", with("enableNotifs", 3.0), []string{`enableNotifs must be true or false`}},
		{"number as string", with("domainName", 42.0), []string{"domainName must be a string"}},
		{"media cache days zero", with("mediaRemoteCacheDays", "0"), []string{`mediaRemoteCacheDays=0 is not a whole number of days, 1 or more`}},
		{"media cache days fraction", with("mediaRemoteCacheDays", 1.5), []string{`mediaRemoteCacheDays=1.5 is not a whole number of days`}},
		{"media cache days word", with("mediaRemoteCacheDays", "a month"), []string{`mediaRemoteCacheDays=a month is not a whole number of days`}},
		{"media cache days as a list", with("mediaRemoteCacheDays", []any{30.0}), []string{"mediaRemoteCacheDays must be a number of days"}},
		{"media lifetime words", with("mediaLocalLifetime", "three months"), []string{`mediaLocalLifetime="three months" is not a duration such as 90d`}},
		{"media lifetime zero", with("mediaRemoteLifetime", "0d"), []string{`mediaRemoteLifetime="0d" is not a duration`}},
		{"no build", with("distDir", filepath.Join(t.TempDir(), "nothing")), []string{"client.zip is missing: run `make build` first"}},
		{"several at once", with("domainName", nil, "alarmEmail", "x"), []string{"domainName is missing", "alarmEmail"}},
		{"turn uris alone", with("turnUris", "turn:turn.example.org"), []string{"turnUris and turnSharedSecretArn go together"}},
		{"turn secret alone", with("turnSharedSecretArn", turnSecretArn), []string{"turnUris and turnSharedSecretArn go together"}},
		{"bad turn uri", with("turnUris", "turn:turn.example.org,https://turn.example.org", "turnSharedSecretArn", turnSecretArn),
			[]string{`turnUris: "https://turn.example.org" is not a TURN URI starting with turn:, turns: or stun:`}},
		{"turn uri with a space", with("turnUris", "turn:turn.example.org ?transport=udp", "turnSharedSecretArn", turnSecretArn), []string{`"turn:turn.example.org ?transport=udp" is not a TURN URI`}},
		{"no turn uri", with("turnUris", " , ", "turnSharedSecretArn", turnSecretArn), []string{"turnUris names no URI"}},
		{"turn uris as a list", with("turnUris", []any{"turn:turn.example.org"}, "turnSharedSecretArn", turnSecretArn), []string{"turnUris must be a string"}},
		{"turn secret by name", with("turnUris", "turn:turn.example.org", "turnSharedSecretArn", "coturn"), []string{`turnSharedSecretArn="coturn" is not a Secrets Manager secret ARN`}},
		{"turn secret partial ARN", with("turnUris", "turn:turn.example.org", "turnSharedSecretArn", "arn:aws:secretsmanager:us-east-1:123456789012:secret:coturn"),
			[]string{"turnSharedSecretArn=", "the complete ARN"}},
		{"turn secret in SSM", with("turnUris", "turn:turn.example.org", "turnSharedSecretArn", "arn:aws:ssm:us-east-1:123456789012:parameter/coturn-AbC123"),
			[]string{"is not a Secrets Manager secret ARN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ctx["distDir"] == "<dist>" {
				tc.ctx["distDir"] = distDir
			}
			app := awscdk.NewApp(&awscdk.AppProps{Context: &tc.ctx})
			props, err := PropsFromContext(app)
			if err == nil {
				_, err = NewCirrusStack(app, "Bad", props)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestContext_Defaults(t *testing.T) {
	p := &CirrusStackProps{DomainName: "Matrix.Example.org.", DistDir: distDir}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.DomainName != "matrix.example.org" || p.ServerName != "matrix.example.org" || p.MailFrom != "noreply@matrix.example.org" {
		t.Errorf("defaults: %+v", p)
	}
	if p.MediaRemoteCacheDays != DefaultMediaRemoteCacheDays {
		t.Errorf("remote media cached %d days by default, want %d", p.MediaRemoteCacheDays, DefaultMediaRemoteCacheDays)
	}
	neg := &CirrusStackProps{DomainName: "matrix.example.org", DistDir: distDir, MediaRemoteCacheDays: -3}
	if err := neg.Validate(); err == nil || !strings.Contains(err.Error(), "mediaRemoteCacheDays=-3") {
		t.Errorf("negative cache days: %v", err)
	}
	for _, k := range []string{"domainName", "turnUris", "turnSharedSecretArn", "mediaRemoteCacheDays"} {
		if !slices.Contains(contextKeys, k) {
			t.Errorf("contextKeys %v lacks %s", contextKeys, k)
		}
	}
}

// TestLargeResponses checks the bucket of answers over Lambda's 6 MB:
// private, encrypted, TLS only, emptied after a day, readable by Element
// Web's fetch from any origin through presigned URLs.
func TestLargeResponses(t *testing.T) {
	s := full(t)
	id, p := s.one(t, "AWS::S3::Bucket", "LargeResponses")
	pab := obj(p["PublicAccessBlockConfiguration"])
	for _, k := range []string{"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"} {
		if pab[k] != true {
			t.Errorf("public access block %s = %v, want true", k, pab[k])
		}
	}
	if !strings.Contains(js(p["BucketEncryption"]), `"SSEAlgorithm":"AES256"`) {
		t.Errorf("encryption %s, want S3-managed", js(p["BucketEncryption"]))
	}
	rules := obj(p["LifecycleConfiguration"])["Rules"].([]any)
	if len(rules) != 1 {
		t.Fatalf("lifecycle rules %s, want one", js(rules))
	}
	rule := obj(rules[0])
	if rule["Prefix"] != LargeResponsePrefix || num(rule["ExpirationInDays"]) != 1 || rule["Status"] != "Enabled" {
		t.Errorf("lifecycle rule %s, want %s expiring after 1 day", js(rule), LargeResponsePrefix)
	}
	cors := obj(p["CorsConfiguration"])["CorsRules"].([]any)
	if len(cors) != 1 {
		t.Fatalf("CORS rules %s, want one", js(cors))
	}
	c := obj(cors[0])
	if js(c["AllowedOrigins"]) != `["*"]` || js(c["AllowedHeaders"]) != `["*"]` || js(c["AllowedMethods"]) != `["GET","HEAD"]` {
		t.Errorf("CORS rule %s, want GET and HEAD from any origin with any header", js(c))
	}
	var ssl bool
	for _, bp := range s.resources("AWS::S3::BucketPolicy") {
		pp := props(bp)
		if reflect.DeepEqual(pp["Bucket"], ref(id)) && strings.Contains(js(pp["PolicyDocument"]), `"aws:SecureTransport":"false"`) {
			ssl = true
		}
	}
	if !ssl {
		t.Error("the bucket accepts requests without TLS")
	}
}

// TestMedia checks the content repository's bucket: private, encrypted, TLS
// only, unversioned (a deleted file is gone), kept when the stack is
// deleted, the remote-media cache expiring after mediaRemoteCacheDays and
// abandoned multipart uploads after a day, presigned downloads readable by
// Element Web's fetch from any origin with ranges; and who may do what in it.
func TestMedia(t *testing.T) {
	s := full(t)
	s.template.ResourceCountIs(jsii.String("AWS::S3::Bucket"), jsii.Number(2))
	id, p := s.one(t, "AWS::S3::Bucket", "Media")
	if r := s.resources("AWS::S3::Bucket")[id]; r["DeletionPolicy"] != "Retain" || r["UpdateReplacePolicy"] != "Retain" {
		t.Errorf("the media bucket is not retained: %v, %v", r["DeletionPolicy"], r["UpdateReplacePolicy"])
	}
	if _, named := p["BucketName"]; named {
		t.Error("the media bucket has a fixed name: two stacks in one account would collide")
	}
	pab := obj(p["PublicAccessBlockConfiguration"])
	for _, k := range []string{"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"} {
		if pab[k] != true {
			t.Errorf("public access block %s = %v, want true", k, pab[k])
		}
	}
	enc := obj(p["BucketEncryption"])["ServerSideEncryptionConfiguration"].([]any)
	if len(enc) != 1 || obj(obj(enc[0])["ServerSideEncryptionByDefault"])["SSEAlgorithm"] != "AES256" {
		t.Errorf("encryption %s, want S3-managed", js(p["BucketEncryption"]))
	}
	if v, ok := p["VersioningConfiguration"]; ok && obj(v)["Status"] != "Suspended" {
		t.Errorf("versioning %s: deleted media would stay as old versions", js(v))
	}

	rules := map[string]map[string]any{}
	for _, r := range obj(p["LifecycleConfiguration"])["Rules"].([]any) {
		rules[obj(r)["Id"].(string)] = obj(r)
	}
	want := map[string]map[string]any{
		"MediaRemoteCacheExpire":      {"Id": "MediaRemoteCacheExpire", "Prefix": "remote/", "ExpirationInDays": 7.0, "Status": "Enabled"},
		"MediaAbortIncompleteUploads": {"Id": "MediaAbortIncompleteUploads", "AbortIncompleteMultipartUpload": map[string]any{"DaysAfterInitiation": 1.0}, "Status": "Enabled"},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("lifecycle rules\n got %s\nwant %s", js(rules), js(want))
	}
	if MediaRemotePrefix != "remote/" {
		t.Errorf("MediaRemotePrefix %q is not the media service's remote/", MediaRemotePrefix)
	}
	// The default, and the number cdk.json gives.
	for name, days := range map[string]float64{"bare": DefaultMediaRemoteCacheDays, "cert": 14} {
		_, mp := synth(t, name, map[string]map[string]any{"bare": bareContext, "cert": certContext}[name]).one(t, "AWS::S3::Bucket", "Media")
		var got []float64
		for _, r := range obj(mp["LifecycleConfiguration"])["Rules"].([]any) {
			if obj(r)["Prefix"] == MediaRemotePrefix {
				got = append(got, num(obj(r)["ExpirationInDays"]))
			}
		}
		if !reflect.DeepEqual(got, []float64{days}) {
			t.Errorf("%s: remote media expires after %v days, want %v", name, got, days)
		}
	}

	cors := obj(p["CorsConfiguration"])["CorsRules"].([]any)
	if len(cors) != 1 {
		t.Fatalf("CORS rules %s, want one", js(cors))
	}
	c := obj(cors[0])
	if js(c["AllowedOrigins"]) != `["*"]` || js(c["AllowedMethods"]) != `["GET","HEAD"]` {
		t.Errorf("CORS rule %s, want GET and HEAD from any origin", js(c))
	}
	// A Range header makes the browser ask first unless it is allowed.
	if h := js(c["AllowedHeaders"]); h != `["*"]` && !strings.Contains(strings.ToLower(h), `"range"`) {
		t.Errorf("CORS allowed headers %s: ranged requests would fail their preflight", h)
	}
	for _, h := range []string{"Content-Range", "Accept-Ranges", "Content-Disposition"} {
		if !slices.Contains(strSlice(c["ExposedHeaders"]), h) {
			t.Errorf("CORS exposes %s, not %s", js(c["ExposedHeaders"]), h)
		}
	}

	var ssl bool
	for _, bp := range s.resources("AWS::S3::BucketPolicy") {
		pp := props(bp)
		if !reflect.DeepEqual(pp["Bucket"], ref(id)) {
			continue
		}
		for _, st := range obj(pp["PolicyDocument"])["Statement"].([]any) {
			st := obj(st)
			if st["Effect"] == "Deny" && js(st["Condition"]) == `{"Bool":{"aws:SecureTransport":"false"}}` && st["Action"] == "s3:*" {
				ssl = true
			}
		}
	}
	if !ssl {
		t.Error("the media bucket accepts requests without TLS")
	}

	if got := obj(obj(s.json["Outputs"])["MediaBucketName"])["Value"]; !reflect.DeepEqual(got, ref(id)) {
		t.Errorf("output MediaBucketName = %s, want the bucket", js(got))
	}

	// Who may do what in the bucket: exact actions by function.
	arn := js(map[string]any{"Fn::GetAtt": getAtt(id, "Arn")})
	wantActions := map[string][]string{
		"Client":     {"s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject"},
		"Federation": {"s3:GetObject", "s3:ListBucket", "s3:PutObject"},
		"Sender":     nil,
		"Loader":     nil,
	}
	for fn, wantA := range wantActions {
		_, f := s.one(t, "AWS::Lambda::Function", fn+"Function")
		_, hasEnv := obj(obj(f["Environment"])["Variables"])["CIRRUS_MEDIA_BUCKET"]
		if hasEnv != (wantA != nil) {
			t.Errorf("%s: CIRRUS_MEDIA_BUCKET in its environment: %v", fn, hasEnv)
		}
		statements, _ := s.statements(t, fn)
		var got []string
		for _, st := range statements {
			if strings.Contains(js(st["Resource"]), arn) {
				got = append(got, strSlice(st["Action"])...)
			}
		}
		sort.Strings(got)
		if !reflect.DeepEqual(got, wantA) {
			t.Errorf("%s: actions on the media bucket %v, want %v", fn, got, wantA)
		}
	}
}

// TestIAM_NoS3Wildcard: no statement in any policy allows s3:* or any other
// wildcard S3 action; the buckets' TLS-only policies deny s3:*, which is
// the one place it belongs.
func TestIAM_NoS3Wildcard(t *testing.T) {
	for name, ctx := range map[string]map[string]any{"full": fullContext, "bare": bareContext, "cert": certContext, "turn": turnContext, "retention": retentionContext, "tier": tierContext} {
		s := synth(t, name, ctx)
		var docs []any
		for _, r := range s.resources("AWS::IAM::Policy") {
			docs = append(docs, props(r)["PolicyDocument"])
		}
		for _, r := range s.resources("AWS::S3::BucketPolicy") {
			docs = append(docs, props(r)["PolicyDocument"])
		}
		for _, r := range s.resources("AWS::IAM::Role") {
			for _, pol := range func() []any { a, _ := props(r)["Policies"].([]any); return a }() {
				docs = append(docs, obj(pol)["PolicyDocument"])
			}
		}
		var checked int
		for _, d := range docs {
			for _, st := range obj(d)["Statement"].([]any) {
				st := obj(st)
				if st["Effect"] != "Allow" {
					continue
				}
				for _, a := range strSlice(st["Action"]) {
					checked++
					if a == "*" || (strings.HasPrefix(a, "s3:") && strings.Contains(a, "*")) {
						t.Errorf("%s: a policy allows %s: %s", name, a, js(st))
					}
				}
			}
		}
		if checked == 0 {
			t.Fatalf("%s: no allowed actions found to check", name)
		}
	}
}

// strSlice reads an IAM or CORS value that is one string or a list of them.
func strSlice(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, x.(string))
		}
		return out
	}
	return nil
}

// TestMediaRetention: with media_retention set, an hourly rule invokes the
// sender with a one-record SQS-shaped batch of kind media.retention (what
// queue.Dispatcher.HandleSQSEvent dispatches), EventBridge alone may invoke
// it for that rule, the client and sender get the lifetimes, and the
// sender gains exactly DeleteObject on the media objects and ListBucket on
// the bucket, every other right as without retention. Without it, there is
// no rule and the sender has no media rights (TestMedia).
func TestMediaRetention(t *testing.T) {
	s := synth(t, "retention", retentionContext)
	_, rule := s.one(t, "AWS::Events::Rule", "MediaRetentionSchedule")
	ruleID, _ := s.one(t, "AWS::Events::Rule", "MediaRetentionSchedule")
	if rule["ScheduleExpression"] != "rate(1 hour)" || rule["State"] != "ENABLED" {
		t.Errorf("schedule %v, state %v; want rate(1 hour), enabled", rule["ScheduleExpression"], rule["State"])
	}
	senderID, sender := s.one(t, "AWS::Lambda::Function", "SenderFunction")
	targets, _ := rule["Targets"].([]any)
	if len(targets) != 1 {
		t.Fatalf("targets %s, want the sender", js(targets))
	}
	target := obj(targets[0])
	if !reflect.DeepEqual(target["Arn"], map[string]any{"Fn::GetAtt": getAtt(senderID, "Arn")}) {
		t.Errorf("target %s, want the sender", js(target["Arn"]))
	}
	var batch struct {
		Records []struct {
			MessageID         string `json:"messageId"`
			Body              string `json:"body"`
			MessageAttributes map[string]struct {
				DataType    string `json:"dataType"`
				StringValue string `json:"stringValue"`
			} `json:"messageAttributes"`
		}
	}
	if err := json.Unmarshal([]byte(target["Input"].(string)), &batch); err != nil || len(batch.Records) != 1 {
		t.Fatalf("input %v: %v, want one SQS record", target["Input"], err)
	}
	if k := batch.Records[0].MessageAttributes["kind"]; k.StringValue != "media.retention" || k.DataType != "String" || batch.Records[0].MessageID == "" {
		t.Errorf("input %v: want a record of kind media.retention with a message ID", target["Input"])
	}
	if obj(target["RetryPolicy"])["MaximumRetryAttempts"] != 0.0 {
		t.Errorf("retry policy %s: a failed run waits for the next hour", js(target["RetryPolicy"]))
	}
	var invoke int
	for _, perm := range s.resources("AWS::Lambda::Permission") {
		p := props(perm)
		if p["Principal"] == "events.amazonaws.com" {
			invoke++
			if !reflect.DeepEqual(p["SourceArn"], map[string]any{"Fn::GetAtt": getAtt(ruleID, "Arn")}) ||
				!reflect.DeepEqual(p["FunctionName"], map[string]any{"Fn::GetAtt": getAtt(senderID, "Arn")}) || p["Action"] != "lambda:InvokeFunction" {
				t.Errorf("EventBridge permission %s, want the sender invoked for this rule only", js(p))
			}
		}
	}
	if invoke != 1 {
		t.Errorf("%d EventBridge invoke permissions, want 1", invoke)
	}

	mediaID, _ := s.one(t, "AWS::S3::Bucket", "Media")
	_, client := s.one(t, "AWS::Lambda::Function", "ClientFunction")
	for fn, f := range map[string]map[string]any{"Client": client, "Sender": sender} {
		env := obj(obj(f["Environment"])["Variables"])
		if env["CIRRUS_MEDIA_RETENTION_LOCAL_MEDIA_LIFETIME"] != "90d" || env["CIRRUS_MEDIA_RETENTION_REMOTE_MEDIA_LIFETIME"] != "14d" ||
			!reflect.DeepEqual(env["CIRRUS_MEDIA_BUCKET"], ref(mediaID)) {
			t.Errorf("%s: environment %s, want the lifetimes and the media bucket", fn, js(env))
		}
	}

	// Every function's rights as without retention, the sender's plus two.
	mediaArn := map[string]any{"Fn::GetAtt": getAtt(mediaID, "Arn")}
	extra := map[string][]string{"Sender": {
		grant(map[string]any{"Action": "s3:DeleteObject", "Resource": map[string]any{"Fn::Join": []any{"", []any{mediaArn, "/*"}}}}),
		grant(map[string]any{"Action": "s3:ListBucket", "Resource": mediaArn}),
	}}
	plain := full(t)
	for _, fn := range []string{"Client", "Federation", "Sender", "Loader"} {
		grants := func(s *synthesized) []string {
			statements, _ := s.statements(t, fn)
			var out []string
			for _, st := range statements {
				out = append(out, grant(st))
			}
			return out
		}
		want := append(grants(plain), extra[fn]...)
		got := grants(s)
		sort.Strings(want)
		sort.Strings(got)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: IAM statements with retention\n got %s\nwant %s", fn, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	}
	if n := len(plain.resources("AWS::Events::Rule")); n != 0 {
		t.Errorf("without media_retention: %d rules, want none", n)
	}
}
