package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/awslabs/goformation/v7"
)

const testImage = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var (
	// tierContext is fullContext with the sync tier, as
	// `make synth CONTEXT="... -c syncTier=fargate -c syncImage=sha256:..."`
	// gives it.
	tierContext = with(fullContext, map[string]any{"syncTier": "fargate", "syncImage": testImage})
	// onDemandContext is a bare deployment with the tier on on-demand
	// Fargate, from another repository; cdk.json gives booleans as booleans.
	onDemandContext = with(bareContext, map[string]any{"syncTier": "fargate", "syncImage": testImage,
		"syncTierSpot": false, "syncImageRepository": "team/cirrus-sync"})
)

func with(base, extra map[string]any) map[string]any {
	c := map[string]any{}
	for k, v := range base {
		c[k] = v
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func tier(t *testing.T) *synthesized { return synth(t, "tier", tierContext) }

// roleStatements returns the grants of a role's policies, and its managed
// policies.
func (s *synthesized) roleStatements(t *testing.T, roleID string) ([]string, any) {
	t.Helper()
	var out []string
	for _, p := range s.resources("AWS::IAM::Policy") {
		pp := props(p)
		if !slices.ContainsFunc(pp["Roles"].([]any), func(r any) bool { return reflect.DeepEqual(r, ref(roleID)) }) {
			continue
		}
		for _, st := range obj(pp["PolicyDocument"])["Statement"].([]any) {
			if obj(st)["Effect"] != "Allow" {
				t.Errorf("role %s: statement %s", roleID, js(st))
			}
			out = append(out, grant(st.(map[string]any)))
		}
	}
	sort.Strings(out)
	return out, props(s.resources("AWS::IAM::Role")[roleID])["ManagedPolicyArns"]
}

// grants builds the sorted grants a test expects: action lists with their
// resources.
func grants(gs ...[2]any) []string {
	var out []string
	for _, g := range gs {
		var actions []any
		for _, a := range g[0].([]string) {
			actions = append(actions, a)
		}
		out = append(out, grant(map[string]any{"Action": actions, "Resource": g[1]}))
	}
	sort.Strings(out)
	return out
}

func getAttArn(id string) map[string]any { return map[string]any{"Fn::GetAtt": getAtt(id, "Arn")} }

// TestSyncTier_Off: without syncTier=fargate nothing of the tier exists, no
// function hears of a news queue, and no function needs dist/tier.zip.
func TestSyncTier_Off(t *testing.T) {
	for name, ctx := range map[string]map[string]any{"full": fullContext, "bare": bareContext} {
		s := synth(t, name, ctx)
		for _, typ := range []string{"AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::SecurityGroup", "AWS::EC2::VPCEndpoint", "AWS::EC2::NatGateway",
			"AWS::ECS::Cluster", "AWS::ECS::Service", "AWS::ECS::TaskDefinition", "AWS::ServiceDiscovery::PrivateDnsNamespace",
			"AWS::ServiceDiscovery::Service", "AWS::ApiGatewayV2::VpcLink"} {
			if n := len(s.resources(typ)); n != 0 {
				t.Errorf("%s: %d resources of type %s without the sync tier", name, n, typ)
			}
		}
		raw := js(s.json)
		for _, w := range []string{"SyncNews", "CIRRUS_SYNC_", "CIRRUS_TIER_", "TierFunction", "TierSchedule", "/sync\""} {
			if strings.Contains(raw, w) {
				t.Errorf("%s: the template mentions %s without the sync tier", name, w)
			}
		}
		if n := len(s.resources("AWS::Lambda::Function")); n != 4 {
			t.Errorf("%s: %d functions, want 4", name, n)
		}
	}
	dir := t.TempDir()
	for _, fn := range Functions {
		data, err := os.ReadFile(filepath.Join(distDir, fn+".zip"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fn+".zip"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := &CirrusStackProps{DomainName: "matrix.example.org", DistDir: dir}
	if err := p.Validate(); err != nil || p.SyncTier != SyncTierLambda {
		t.Errorf("without tier.zip or an image, the default stack: %v, tier %q", err, p.SyncTier)
	}
}

// TestSyncTier_Task: the tier's task is ARM64 Linux at 0.25 vCPU and 512 MB,
// runs `/cirrus sync-tier` from the image by digest on port 8008, logs to
// its own log group, and has the environment the tier process reads.
func TestSyncTier_Task(t *testing.T) {
	s := tier(t)
	_, task := s.one(t, "AWS::ECS::TaskDefinition", "SyncTask")
	if js(task["RuntimePlatform"]) != `{"CpuArchitecture":"ARM64","OperatingSystemFamily":"LINUX"}` ||
		task["Cpu"] != "256" || task["Memory"] != "512" || task["NetworkMode"] != "awsvpc" || js(task["RequiresCompatibilities"]) != `["FARGATE"]` {
		t.Errorf("task definition %s", js(task))
	}
	containers := task["ContainerDefinitions"].([]any)
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := obj(containers[0])
	if js(c["Command"]) != `["sync-tier"]` || c["EntryPoint"] != nil || js(c["PortMappings"]) != `[{"ContainerPort":8008,"Protocol":"tcp"}]` ||
		num(c["StopTimeout"]) != 30 || c["Essential"] != true {
		t.Errorf("container %s", js(c))
	}
	if image := js(c["Image"]); !strings.HasSuffix(image, `"/cirrus-sync@`+testImage+`"]]}`) || !strings.Contains(image, `".dkr.ecr."`) {
		t.Errorf("image %s, want the cirrus-sync repository's image by digest", image)
	}
	logs, lg := s.one(t, "AWS::Logs::LogGroup", "SyncTierLogs")
	if num(lg["RetentionInDays"]) != 30 {
		t.Errorf("tier log retention %v days, want 30", lg["RetentionInDays"])
	}
	if lc := obj(c["LogConfiguration"]); lc["LogDriver"] != "awslogs" || !reflect.DeepEqual(obj(lc["Options"])["awslogs-group"], ref(logs)) {
		t.Errorf("log configuration %s", js(lc))
	}
	table, _ := s.one(t, "AWS::DynamoDB::Table", "Table")
	seed, _ := s.one(t, "AWS::SecretsManager::Secret", "SigningKeySeed")
	queue, _ := s.one(t, "AWS::SQS::Queue", "FederationQueue")
	news, _ := s.one(t, "AWS::SQS::Queue", "SyncNewsQueue")
	large, _ := s.one(t, "AWS::S3::Bucket", "LargeResponses")
	env := map[string]any{}
	for _, kv := range c["Environment"].([]any) {
		env[obj(kv)["Name"].(string)] = obj(kv)["Value"]
	}
	want := map[string]any{
		"CIRRUS_SERVER_NAME":                 "example.org",
		"CIRRUS_PUBLIC_BASEURL":              "https://matrix.example.org/",
		"CIRRUS_DYNAMODB_TABLE":              ref(table),
		"CIRRUS_SIGNING_KEY_SEED_SECRET_ARN": ref(seed),
		"CIRRUS_QUEUE_URL":                   ref(queue),
		"CIRRUS_SYNC_NEWS_QUEUE_URL":         ref(news),
		"CIRRUS_SYNC_POLL_INTERVAL_MS":       "25000",
		"CIRRUS_LARGE_RESPONSE_BUCKET":       ref(large),
		"CIRRUS_CLIENT_LISTEN":               ":8008",
		"CIRRUS_SYNC_MAX_TIMEOUT_MS":         "25000",
	}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("tier environment\n got %s\nwant %s", js(env), js(want))
	}
}

// TestSyncTier_Rights: the task role may do exactly what the tier process
// needs; the execution role only pulls the image and writes the logs.
func TestSyncTier_Rights(t *testing.T) {
	s := tier(t)
	table, _ := s.one(t, "AWS::DynamoDB::Table", "Table")
	seed, _ := s.one(t, "AWS::SecretsManager::Secret", "SigningKeySeed")
	queue, _ := s.one(t, "AWS::SQS::Queue", "FederationQueue")
	news, _ := s.one(t, "AWS::SQS::Queue", "SyncNewsQueue")
	large, _ := s.one(t, "AWS::S3::Bucket", "LargeResponses")
	_, task := s.one(t, "AWS::ECS::TaskDefinition", "SyncTask")
	taskRole := obj(task["TaskRoleArn"])["Fn::GetAtt"].([]any)[0].(string)
	execRole := obj(task["ExecutionRoleArn"])["Fn::GetAtt"].([]any)[0].(string)
	if taskRole == execRole {
		t.Fatal("the task and the agent pulling its image share a role")
	}
	tableArn := getAttArn(table)
	want := grants(
		[2]any{tableItemActions, tableArn},
		[2]any{tableQueryActions, []any{tableArn, map[string]any{"Fn::Join": []any{"", []any{tableArn, "/index/*"}}}}},
		[2]any{[]string{"secretsmanager:GetSecretValue"}, ref(seed)},
		[2]any{[]string{"sqs:SendMessage"}, getAttArn(queue)},
		[2]any{[]string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}, getAttArn(news)},
		[2]any{[]string{"s3:PutObject", "s3:GetObject"}, map[string]any{"Fn::Join": []any{"", []any{getAttArn(large), "/" + LargeResponsePrefix + "*"}}}},
	)
	got, managed := s.roleStatements(t, taskRole)
	if !reflect.DeepEqual(got, want) || managed != nil {
		t.Errorf("task role statements\n got %s\nwant %s\n(managed policies %v)", strings.Join(got, "\n     "), strings.Join(want, "\n     "), managed)
	}
	if p := props(s.resources("AWS::IAM::Role")[taskRole]); !strings.Contains(js(p["AssumeRolePolicyDocument"]), `"Service":"ecs-tasks.amazonaws.com"`) {
		t.Errorf("task role trust %s", js(p["AssumeRolePolicyDocument"]))
	}
	logs, _ := s.one(t, "AWS::Logs::LogGroup", "SyncTierLogs")
	repoArn := map[string]any{"Fn::Join": []any{"", []any{"arn:", ref("AWS::Partition"), ":ecr:", ref("AWS::Region"), ":", ref("AWS::AccountId"), ":repository/cirrus-sync"}}}
	want = grants(
		[2]any{[]string{"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"}, repoArn},
		// ECR's token has no resource-level permission.
		[2]any{[]string{"ecr:GetAuthorizationToken"}, "*"},
		[2]any{[]string{"logs:CreateLogStream", "logs:PutLogEvents"}, getAttArn(logs)},
	)
	got, managed = s.roleStatements(t, execRole)
	if !reflect.DeepEqual(got, want) || managed != nil {
		t.Errorf("execution role statements\n got %s\nwant %s\n(managed policies %v)", strings.Join(got, "\n     "), strings.Join(want, "\n     "), managed)
	}
}

// TestSyncTier_Service: the service starts at zero tasks on Spot (FARGATE at
// weight 0 for an operator to raise), without the circuit breaker, one task
// replacing another freely, with a public IP in a public subnet, registered
// by SRV record (with its port) in a private DNS namespace of the VPC.
func TestSyncTier_Service(t *testing.T) {
	s := tier(t)
	clusterID, cluster := s.one(t, "AWS::ECS::Cluster", "SyncCluster")
	if js(cluster["ClusterSettings"]) != `[{"Name":"containerInsights","Value":"disabled"}]` {
		t.Errorf("cluster settings %s: Container Insights bills its metrics", js(cluster["ClusterSettings"]))
	}
	assocID, assoc := s.one(t, "AWS::ECS::ClusterCapacityProviderAssociations", "SyncCluster")
	if !reflect.DeepEqual(assoc["Cluster"], ref(clusterID)) || js(assoc["CapacityProviders"]) != `["FARGATE","FARGATE_SPOT"]` {
		t.Errorf("capacity providers %s", js(assoc))
	}
	serviceID, svc := s.one(t, "AWS::ECS::Service", "SyncService")
	if num(svc["DesiredCount"]) != 0 || svc["DesiredCount"] == nil {
		t.Errorf("desired count %v, want 0 in the template", svc["DesiredCount"])
	}
	if got := js(svc["CapacityProviderStrategy"]); got != `[{"CapacityProvider":"FARGATE_SPOT","Weight":1},{"CapacityProvider":"FARGATE","Weight":0}]` || svc["LaunchType"] != nil {
		t.Errorf("capacity provider strategy %s, launch type %v", got, svc["LaunchType"])
	}
	if deps := js(s.resources("AWS::ECS::Service")[serviceID]["DependsOn"]); !strings.Contains(deps, `"`+assocID+`"`) {
		t.Errorf("the service does not wait for the cluster's capacity providers: DependsOn %s", deps)
	}
	dc := obj(svc["DeploymentConfiguration"])
	if num(dc["MinimumHealthyPercent"]) != 0 || num(dc["MaximumPercent"]) != 200 || obj(dc["DeploymentCircuitBreaker"])["Enable"] == true {
		t.Errorf("deployment configuration %s", js(dc))
	}
	taskSG, _ := s.one(t, "AWS::EC2::SecurityGroup", "SyncTaskSecurityGroup")
	net := obj(obj(svc["NetworkConfiguration"])["AwsvpcConfiguration"])
	var public []any
	for id, r := range s.resources("AWS::EC2::Subnet") {
		if props(r)["MapPublicIpOnLaunch"] == true {
			public = append(public, ref(id))
		}
	}
	sort.Slice(public, func(i, j int) bool { return js(public[i]) < js(public[j]) })
	if net["AssignPublicIp"] != "ENABLED" || !reflect.DeepEqual(net["SecurityGroups"], []any{map[string]any{"Fn::GetAtt": getAtt(taskSG, "GroupId")}}) ||
		!reflect.DeepEqual(net["Subnets"], public) || len(public) != 2 {
		t.Errorf("network configuration %s, public subnets %s", js(net), js(public))
	}
	registryID, registry := s.one(t, "AWS::ServiceDiscovery::Service", "SyncService")
	if js(svc["ServiceRegistries"]) != js([]any{map[string]any{"ContainerName": "sync", "ContainerPort": 8008, "RegistryArn": getAttArn(registryID)}}) {
		t.Errorf("service registries %s", js(svc["ServiceRegistries"]))
	}
	namespaceID, namespace := s.one(t, "AWS::ServiceDiscovery::PrivateDnsNamespace", "SyncNamespace")
	vpcID, _ := s.one(t, "AWS::EC2::VPC", "SyncVpc")
	if !reflect.DeepEqual(namespace["Vpc"], ref(vpcID)) {
		t.Errorf("namespace %s, want one in the tier's VPC", js(namespace))
	}
	dns := obj(registry["DnsConfig"])
	if js(dns["DnsRecords"]) != `[{"TTL":10,"Type":"SRV"}]` || !reflect.DeepEqual(dns["NamespaceId"], map[string]any{"Fn::GetAtt": getAtt(namespaceID, "Id")}) ||
		registry["HealthCheckCustomConfig"] == nil {
		t.Errorf("Cloud Map service %s: want an SRV record (the port API Gateway needs), ECS's health", js(registry))
	}

	// On demand, from another repository.
	od := synth(t, "on-demand", onDemandContext)
	_, svc = od.one(t, "AWS::ECS::Service", "SyncService")
	if got := js(svc["CapacityProviderStrategy"]); got != `[{"CapacityProvider":"FARGATE","Weight":1}]` {
		t.Errorf("syncTierSpot=false: capacity provider strategy %s", got)
	}
	_, task := od.one(t, "AWS::ECS::TaskDefinition", "SyncTask")
	if image := js(obj(task["ContainerDefinitions"].([]any)[0])["Image"]); !strings.HasSuffix(image, `"/team/cirrus-sync@`+testImage+`"]]}`) {
		t.Errorf("image %s, want the team/cirrus-sync repository's", image)
	}
}

// TestSyncTier_Network: two public subnets, no NAT gateway and no Elastic
// IP, DynamoDB through a gateway endpoint; the task accepts only port 8008
// and only from the VPC link, and speaks only HTTPS outwards.
func TestSyncTier_Network(t *testing.T) {
	s := tier(t)
	for _, typ := range []string{"AWS::EC2::NatGateway", "AWS::EC2::EIP", "AWS::EC2::VPCEndpoint"} {
		if n, want := len(s.resources(typ)), map[bool]int{true: 1, false: 0}[typ == "AWS::EC2::VPCEndpoint"]; n != want {
			t.Errorf("%d resources of type %s, want %d", n, typ, want)
		}
	}
	subnets := s.resources("AWS::EC2::Subnet")
	if len(subnets) != 2 {
		t.Errorf("%d subnets, want 2 (2 AZs, public only)", len(subnets))
	}
	for id, r := range subnets {
		if props(r)["MapPublicIpOnLaunch"] != true {
			t.Errorf("subnet %s is not public", id)
		}
	}
	vpcID, _ := s.one(t, "AWS::EC2::VPC", "SyncVpc")
	_, endpoint := s.one(t, "AWS::EC2::VPCEndpoint", "SyncVpc")
	if endpoint["VpcEndpointType"] != "Gateway" || !strings.Contains(js(endpoint["ServiceName"]), ".dynamodb") ||
		!reflect.DeepEqual(endpoint["VpcId"], ref(vpcID)) || len(endpoint["RouteTableIds"].([]any)) != 2 {
		t.Errorf("endpoint %s, want DynamoDB's gateway on both route tables", js(endpoint))
	}
	taskSG, task := s.one(t, "AWS::EC2::SecurityGroup", "SyncTaskSecurityGroup")
	linkSG, link := s.one(t, "AWS::EC2::SecurityGroup", "SyncVpcLinkSecurityGroup")
	groupID := func(id string) map[string]any { return map[string]any{"Fn::GetAtt": getAtt(id, "GroupId")} }
	if task["SecurityGroupIngress"] != nil || link["SecurityGroupIngress"] != nil {
		t.Errorf("inline ingress rules: task %s, link %s", js(task["SecurityGroupIngress"]), js(link["SecurityGroupIngress"]))
	}
	if js(task["SecurityGroupEgress"]) != `[{"CidrIp":"0.0.0.0/0","Description":"HTTPS to AWS APIs (ECR, S3, Secrets Manager, SQS, DynamoDB)","FromPort":443,"IpProtocol":"tcp","ToPort":443}]` {
		t.Errorf("task egress %s, want HTTPS only", js(task["SecurityGroupEgress"]))
	}
	var ingress []map[string]any
	for _, r := range s.resources("AWS::EC2::SecurityGroupIngress") {
		ingress = append(ingress, props(r))
	}
	if len(ingress) != 1 || !reflect.DeepEqual(ingress[0]["GroupId"], groupID(taskSG)) || !reflect.DeepEqual(ingress[0]["SourceSecurityGroupId"], groupID(linkSG)) ||
		num(ingress[0]["FromPort"]) != 8008 || num(ingress[0]["ToPort"]) != 8008 || ingress[0]["IpProtocol"] != "tcp" {
		t.Errorf("ingress rules %s, want 8008 to the task from the VPC link only", js(ingress))
	}
	var egress []map[string]any
	for _, r := range s.resources("AWS::EC2::SecurityGroupEgress") {
		egress = append(egress, props(r))
	}
	if len(egress) != 1 || !reflect.DeepEqual(egress[0]["GroupId"], groupID(linkSG)) || !reflect.DeepEqual(egress[0]["DestinationSecurityGroupId"], groupID(taskSG)) ||
		num(egress[0]["FromPort"]) != 8008 || num(egress[0]["ToPort"]) != 8008 {
		t.Errorf("egress rules %s, want the VPC link to the task's 8008 only", js(egress))
	}
	if strings.Contains(js(link["SecurityGroupEgress"]), "0.0.0.0/0") {
		t.Errorf("the VPC link may send anywhere: %s", js(link["SecurityGroupEgress"]))
	}
}

// TestSyncTier_Routes: the four sync routes are routes of their own on the
// client function's integration (the one its other routes use), which API
// Gateway may invoke on their paths; the tier's integration goes through
// the VPC link to the Cloud Map service, and only the health check's route
// targets it in the template.
func TestSyncTier_Routes(t *testing.T) {
	s := tier(t)
	apiID, _ := s.one(t, "AWS::ApiGatewayV2::Api", "Api")
	client, _ := s.one(t, "AWS::Lambda::Function", "ClientFunction")
	targets := map[string]any{}
	for _, r := range s.resources("AWS::ApiGatewayV2::Route") {
		targets[props(r)["RouteKey"].(string)] = props(r)["Target"]
	}
	clientTarget := targets["ANY /_matrix/client/{proxy+}"]
	if clientTarget == nil {
		t.Fatal("no client route")
	}
	for _, path := range SyncRoutes {
		if got := targets["ANY "+path]; !reflect.DeepEqual(got, clientTarget) {
			t.Errorf("route ANY %s targets %s, want the client's %s", path, js(got), js(clientTarget))
		}
		var allowed bool
		for _, r := range s.resources("AWS::Lambda::Permission") {
			p := props(r)
			if reflect.DeepEqual(p["FunctionName"], getAttArn(client)) && p["Principal"] == "apigateway.amazonaws.com" &&
				strings.Contains(js(p["SourceArn"]), `"Ref":"`+apiID+`"},"/*/*`+path+`"]`) {
				allowed = true
			}
		}
		if !allowed {
			t.Errorf("API Gateway may not invoke the client function on %s", path)
		}
	}
	if n := len(targets); n != len(ClientRoutes)+len(FederationRoutes)+len(SyncRoutes)+1 {
		t.Errorf("%d routes, want %d", n, len(ClientRoutes)+len(FederationRoutes)+len(SyncRoutes)+1)
	}
	linkID, link := s.one(t, "AWS::ApiGatewayV2::VpcLink", "SyncVpcLink")
	linkSG, _ := s.one(t, "AWS::EC2::SecurityGroup", "SyncVpcLinkSecurityGroup")
	_, svc := s.one(t, "AWS::ECS::Service", "SyncService")
	if !reflect.DeepEqual(link["SecurityGroupIds"], []any{map[string]any{"Fn::GetAtt": getAtt(linkSG, "GroupId")}}) ||
		!reflect.DeepEqual(link["SubnetIds"], obj(obj(svc["NetworkConfiguration"])["AwsvpcConfiguration"])["Subnets"]) {
		t.Errorf("VPC link %s", js(link))
	}
	tierID, integ := s.one(t, "AWS::ApiGatewayV2::Integration", "SyncTierIntegration")
	registryID, _ := s.one(t, "AWS::ServiceDiscovery::Service", "SyncService")
	if integ["IntegrationType"] != "HTTP_PROXY" || integ["ConnectionType"] != "VPC_LINK" || integ["IntegrationMethod"] != "ANY" ||
		!reflect.DeepEqual(integ["ConnectionId"], ref(linkID)) || !reflect.DeepEqual(integ["IntegrationUri"], getAttArn(registryID)) ||
		!reflect.DeepEqual(integ["ApiId"], ref(apiID)) || integ["PayloadFormatVersion"] != "1.0" {
		t.Errorf("tier integration %s", js(integ))
	}
	health := targets["GET "+SyncTierHealthPath]
	if want := map[string]any{"Fn::Join": []any{"", []any{"integrations/", ref(tierID)}}}; !reflect.DeepEqual(health, want) {
		t.Errorf("the health route targets %s, want the tier's integration %s", js(health), js(want))
	}
	delete(targets, "GET "+SyncTierHealthPath)
	if strings.Contains(js(targets), tierID) {
		t.Errorf("a route besides the health check targets the tier in the template: %s", js(targets))
	}
}

// TestSyncTier_News: the news queue keeps messages a minute, encrypted, TLS
// only; every writer of sync news has its URL and may send to it, and has
// every right it has without the tier.
func TestSyncTier_News(t *testing.T) {
	s := tier(t)
	news, q := s.one(t, "AWS::SQS::Queue", "SyncNewsQueue")
	if num(q["MessageRetentionPeriod"]) != 60 || num(q["VisibilityTimeout"]) != 30 || q["SqsManagedSseEnabled"] != true {
		t.Errorf("news queue %s", js(q))
	}
	var ssl bool
	for _, r := range s.resources("AWS::SQS::QueuePolicy") {
		p := props(r)
		if reflect.DeepEqual(p["Queues"], []any{ref(news)}) && strings.Contains(js(p["PolicyDocument"]), `"aws:SecureTransport":"false"`) {
			ssl = true
		}
	}
	if !ssl {
		t.Error("the news queue accepts requests without TLS")
	}
	plain := full(t)
	send := grant(map[string]any{"Action": "sqs:SendMessage", "Resource": getAttArn(news)})
	for _, fn := range []string{"Client", "Federation", "Sender", "Loader"} {
		_, f := s.one(t, "AWS::Lambda::Function", fn+"Function")
		_, pf := plain.one(t, "AWS::Lambda::Function", fn+"Function")
		env := obj(obj(f["Environment"])["Variables"])
		wantEnv := obj(obj(pf["Environment"])["Variables"])
		wantEnv["CIRRUS_SYNC_NEWS_QUEUE_URL"] = ref(news)
		if !reflect.DeepEqual(env, wantEnv) {
			t.Errorf("%s: environment\n got %s\nwant %s", fn, js(env), js(wantEnv))
		}
		list := func(s *synthesized) []string {
			statements, _ := s.statements(t, fn)
			var out []string
			for _, st := range statements {
				out = append(out, grant(st))
			}
			sort.Strings(out)
			return out
		}
		want := append(list(plain), send)
		sort.Strings(want)
		if got := list(s); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: IAM statements with the tier\n got %s\nwant %s", fn, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
		}
	}
}

// TestSyncTier_Controller: the tier function runs every minute with the
// names it acts on and exactly the rights it needs.
func TestSyncTier_Controller(t *testing.T) {
	s := tier(t)
	fnID, fn := s.one(t, "AWS::Lambda::Function", "TierFunction")
	if js(fn["Architectures"]) != `["arm64"]` || fn["Runtime"] != "provided.al2023" || fn["Handler"] != "bootstrap" ||
		num(fn["MemorySize"]) != 128 || num(fn["Timeout"]) != 60 {
		t.Errorf("controller %s", js(fn))
	}
	_, client := s.one(t, "AWS::Lambda::Function", "ClientFunction")
	// The stand-in zips differ by function (TestMain).
	if key := obj(fn["Code"])["S3Key"]; key == nil || reflect.DeepEqual(key, obj(client["Code"])["S3Key"]) {
		t.Errorf("controller code %v, want dist/tier.zip's own asset", fn["Code"])
	}
	table, _ := s.one(t, "AWS::DynamoDB::Table", "Table")
	cluster, _ := s.one(t, "AWS::ECS::Cluster", "SyncCluster")
	service, _ := s.one(t, "AWS::ECS::Service", "SyncService")
	apiID, _ := s.one(t, "AWS::ApiGatewayV2::Api", "Api")
	tierInteg, _ := s.one(t, "AWS::ApiGatewayV2::Integration", "SyncTierIntegration")
	routeIDs := map[string]string{}
	for id, r := range s.resources("AWS::ApiGatewayV2::Route") {
		routeIDs[props(r)["RouteKey"].(string)] = id
	}
	var routes, routeArns []any
	for _, path := range SyncRoutes {
		id := routeIDs["ANY "+path]
		routes = append(routes, ref(id))
		routeArns = append(routeArns, map[string]any{"Fn::Join": []any{"", []any{"arn:", ref("AWS::Partition"), ":apigateway:", ref("AWS::Region"), "::/apis/", ref(apiID), "/routes/", ref(id)}}})
	}
	// The Lambda integration is the one the client's routes target.
	var lambdaInteg string
	for _, r := range s.resources("AWS::ApiGatewayV2::Route") {
		if p := props(r); p["RouteKey"] == "ANY /_matrix/client/{proxy+}" {
			lambdaInteg = obj(p["Target"])["Fn::Join"].([]any)[1].([]any)[1].(map[string]any)["Ref"].(string)
		}
	}
	want := map[string]any{
		"CIRRUS_DYNAMODB_TABLE":              ref(table),
		"CIRRUS_TIER_CLUSTER":                ref(cluster),
		"CIRRUS_TIER_SERVICE":                map[string]any{"Fn::GetAtt": getAtt(service, "Name")},
		"CIRRUS_TIER_API_ID":                 ref(apiID),
		"CIRRUS_TIER_ROUTE_IDS":              map[string]any{"Fn::Join": []any{",", routes}},
		"CIRRUS_TIER_LAMBDA_INTEGRATION_ID":  ref(lambdaInteg),
		"CIRRUS_TIER_FARGATE_INTEGRATION_ID": ref(tierInteg),
		"CIRRUS_TIER_HEALTH_URL":             "https://matrix.example.org/_cirrus/health",
	}
	if env := obj(obj(fn["Environment"])["Variables"]); !reflect.DeepEqual(env, want) {
		t.Errorf("controller environment\n got %s\nwant %s", js(env), js(want))
	}
	logs, _ := s.one(t, "AWS::Logs::LogGroup", "TierLogs")
	wantGrants := grants(
		[2]any{[]string{"logs:CreateLogStream", "logs:PutLogEvents"}, getAttArn(logs)},
		[2]any{[]string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}, getAttArn(table)},
		[2]any{[]string{"ecs:DescribeServices", "ecs:UpdateService"}, ref(service)},
		[2]any{[]string{"apigateway:GET", "apigateway:PATCH"}, routeArns},
	)
	statements, managed := s.statements(t, "Tier")
	var got []string
	for _, st := range statements {
		got = append(got, grant(st))
	}
	sort.Strings(got)
	if !reflect.DeepEqual(got, wantGrants) || managed != nil {
		t.Errorf("controller statements\n got %s\nwant %s\n(managed policies %v)", strings.Join(got, "\n     "), strings.Join(wantGrants, "\n     "), managed)
	}

	ruleID, rule := s.one(t, "AWS::Events::Rule", "TierSchedule")
	if rule["ScheduleExpression"] != "rate(1 minute)" || rule["State"] != "ENABLED" {
		t.Errorf("schedule %s", js(rule))
	}
	targets, _ := rule["Targets"].([]any)
	if len(targets) != 1 || !reflect.DeepEqual(obj(targets[0])["Arn"], getAttArn(fnID)) || obj(obj(targets[0])["RetryPolicy"])["MaximumRetryAttempts"] != 0.0 {
		t.Errorf("schedule targets %s, want the controller, not retried", js(targets))
	}
	var invoke int
	for _, perm := range s.resources("AWS::Lambda::Permission") {
		if p := props(perm); p["Principal"] == "events.amazonaws.com" {
			invoke++
			if !reflect.DeepEqual(p["SourceArn"], getAttArn(ruleID)) || !reflect.DeepEqual(p["FunctionName"], getAttArn(fnID)) {
				t.Errorf("EventBridge permission %s, want the controller invoked for its rule only", js(p))
			}
		}
	}
	if invoke != 1 {
		t.Errorf("%d EventBridge invoke permissions, want 1", invoke)
	}
	s.template.HasResourceProperties(jsii.String("AWS::CloudWatch::Alarm"), map[string]any{
		"MetricName": "Errors", "Namespace": "AWS/Lambda", "Threshold": 1,
		"Dimensions": []any{map[string]any{"Name": "FunctionName", "Value": ref(fnID)}},
	})
}

// TestSyncTier_Outputs: what an operator needs to watch or act on the tier.
func TestSyncTier_Outputs(t *testing.T) {
	s := tier(t)
	outputs := obj(s.json["Outputs"])
	cluster, _ := s.one(t, "AWS::ECS::Cluster", "SyncCluster")
	service, _ := s.one(t, "AWS::ECS::Service", "SyncService")
	news, _ := s.one(t, "AWS::SQS::Queue", "SyncNewsQueue")
	fn, _ := s.one(t, "AWS::Lambda::Function", "TierFunction")
	logs, _ := s.one(t, "AWS::Logs::LogGroup", "SyncTierLogs")
	tierInteg, _ := s.one(t, "AWS::ApiGatewayV2::Integration", "SyncTierIntegration")
	for name, want := range map[string]any{
		"SyncTierCluster":              ref(cluster),
		"SyncTierService":              map[string]any{"Fn::GetAtt": getAtt(service, "Name")},
		"SyncNewsQueueUrl":             ref(news),
		"SyncTierController":           ref(fn),
		"SyncTierLogGroup":             ref(logs),
		"SyncTierFargateIntegrationId": ref(tierInteg),
	} {
		if got := obj(outputs[name])["Value"]; !reflect.DeepEqual(got, want) {
			t.Errorf("output %s = %s, want %s", name, js(got), js(want))
		}
	}
	for _, name := range []string{"SyncTierImage", "SyncTierApiId", "SyncTierRouteIds", "SyncTierLambdaIntegrationId"} {
		if obj(outputs[name])["Value"] == nil {
			t.Errorf("no output %s", name)
		}
	}
	if v := js(obj(outputs["SyncTierImage"])["Value"]); !strings.Contains(v, "/cirrus-sync@"+testImage) {
		t.Errorf("SyncTierImage %s", v)
	}
	for name := range obj(full(t).json["Outputs"]) {
		if strings.HasPrefix(name, "Sync") {
			t.Errorf("output %s without the tier", name)
		}
	}
}

// TestSyncTier_Template: goformation reads the tier's template, and no
// statement allows anything on "*" but ECR's token, which has no
// resource-level permissions.
func TestSyncTier_Template(t *testing.T) {
	s := tier(t)
	// goformation 7.14 predates the VPC endpoint's Tags (the Name tag CDK
	// gives it): parse a copy without them.
	var c map[string]any
	raw, _ := json.Marshal(s.json)
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	for _, r := range obj(c["Resources"]) {
		if obj(r)["Type"] == "AWS::EC2::VPCEndpoint" {
			delete(obj(obj(r)["Properties"]), "Tags")
		}
	}
	raw, _ = json.Marshal(c)
	tpl, err := goformation.ParseJSON(raw)
	if err != nil {
		t.Fatalf("goformation: %v", err)
	}
	if n := len(tpl.GetAllLambdaFunctionResources()); n != 5 {
		t.Errorf("goformation sees %d functions, want 5", n)
	}
	if len(tpl.Resources) != len(obj(s.json["Resources"])) {
		t.Errorf("goformation read %d resources of %d", len(tpl.Resources), len(obj(s.json["Resources"])))
	}
	for _, r := range s.resources("AWS::IAM::Policy") {
		for _, st := range obj(props(r)["PolicyDocument"])["Statement"].([]any) {
			st := obj(st)
			if st["Resource"] != "*" {
				continue
			}
			if a := st["Action"]; a != "ecr:GetAuthorizationToken" {
				t.Errorf("a policy allows %v on everything", a)
			}
		}
		if strings.Contains(js(props(r)), `"Action":"*"`) {
			t.Errorf("a policy allows everything: %s", js(props(r)))
		}
	}
}

// TestSyncTier_DigestFile: without syncImage, the digest is what `make
// image` wrote to <distDir>/sync-image/digest, and the repository is
// cirrus-sync.
func TestSyncTier_DigestFile(t *testing.T) {
	dir := t.TempDir()
	for _, fn := range append(slices.Clone(Functions), TierFunction) {
		if err := os.WriteFile(filepath.Join(dir, fn+".zip"), emptyZip(fn), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "sync-image"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sync-image", "digest"), []byte(testImage+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &CirrusStackProps{DomainName: "matrix.example.org", DistDir: dir, SyncTier: "Fargate", SyncTierSpot: true}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.SyncTier != SyncTierFargate || p.SyncImage != testImage || p.SyncImageRepository != DefaultSyncImageRepository {
		t.Errorf("tier %q, image %q, repository %q", p.SyncTier, p.SyncImage, p.SyncImageRepository)
	}
	if err := os.WriteFile(filepath.Join(dir, "sync-image", "digest"), []byte("latest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p = &CirrusStackProps{DomainName: "matrix.example.org", DistDir: dir, SyncTier: SyncTierFargate}
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), `holds "latest", not an image digest`) || !strings.Contains(err.Error(), "make image") {
		t.Errorf("a digest file without a digest: %v", err)
	}
}

// TestSyncTier_Context: the tier's context values, their defaults, and
// what a wrong one says.
func TestSyncTier_Context(t *testing.T) {
	props := func(ctx map[string]any) (*CirrusStackProps, error) {
		app := awscdk.NewApp(&awscdk.AppProps{Context: &ctx})
		return PropsFromContext(app)
	}
	for _, tc := range []struct {
		ctx  map[string]any
		spot bool
	}{
		{map[string]any{}, true},
		{map[string]any{"syncTierSpot": "false"}, false},
		{map[string]any{"syncTierSpot": false}, false},
		{map[string]any{"syncTierSpot": "true"}, true},
	} {
		p, err := props(with(map[string]any{"domainName": "matrix.example.org", "syncTier": "fargate"}, tc.ctx))
		if err != nil || p.SyncTierSpot != tc.spot || p.SyncTier != "fargate" {
			t.Errorf("context %v: spot %v, tier %q, err %v; want spot %v", tc.ctx, p.SyncTierSpot, p.SyncTier, err, tc.spot)
		}
	}
	for _, k := range []string{"syncTier", "syncTierSpot", "syncImage", "syncImageRepository"} {
		if !slices.Contains(contextKeys, k) {
			t.Errorf("contextKeys %v lacks %s", contextKeys, k)
		}
	}
	noTier := t.TempDir()
	for _, fn := range Functions {
		if err := os.WriteFile(filepath.Join(noTier, fn+".zip"), emptyZip(fn), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := map[string]any{"domainName": "matrix.example.org", "distDir": distDir, "syncTier": "fargate", "syncImage": testImage}
	for _, tc := range []struct {
		name string
		ctx  map[string]any
		want []string
	}{
		{"unknown tier", with(base, map[string]any{"syncTier": "ecs"}), []string{`syncTier="ecs" is not lambda`, "fargate"}},
		{"no image", with(base, map[string]any{"syncImage": ""}), []string{filepath.Join(distDir, "sync-image", "digest") + " is missing", "run `make image` first"}},
		{"image by tag", with(base, map[string]any{"syncImage": "latest"}), []string{`syncImage="latest" is not an image digest`}},
		{"short digest", with(base, map[string]any{"syncImage": "sha256:0123"}), []string{`syncImage="sha256:0123" is not an image digest`}},
		{"bad repository", with(base, map[string]any{"syncImageRepository": "Cirrus Sync"}), []string{`syncImageRepository="Cirrus Sync" is not an ECR repository name`}},
		{"bad spot", with(base, map[string]any{"syncTierSpot": "sometimes"}), []string{`syncTierSpot="sometimes" is not true or false`}},
		{"no controller build", with(base, map[string]any{"distDir": noTier}), []string{"tier.zip is missing: run `make build` first"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			app := awscdk.NewApp(&awscdk.AppProps{Context: &ctx})
			p, err := PropsFromContext(app)
			if err == nil {
				_, err = NewCirrusStack(app, "Bad", p)
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
	// With the default tier, the tier's values are not looked at.
	p := &CirrusStackProps{DomainName: "matrix.example.org", DistDir: distDir, SyncImage: "latest"}
	if err := p.Validate(); err != nil {
		t.Errorf("syncTier=lambda with a stray syncImage: %v", err)
	}
}
