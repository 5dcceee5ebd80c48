package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecr"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsservicediscovery"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawsec2"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// The sync tier (issue 18): a /sync long-poll waiting in the client function
// is billed for its whole wait, $0.012 a connected client-hour at 256 MB.
// With syncTier=fargate the stack adds a long-running process of the same
// code (`cirrus sync-tier`) serving only the sync routes, on Fargate (ARM,
// Spot), reached from the HTTP API through a VPC link and Cloud Map; and a
// controller function (functions/tier, shared/synctier) that every minute
// points the four sync routes at the Lambda integration or at the tier, on
// the measured concurrency, and scales the tier to zero when nobody waits.
//
// What the tier costs when it is scaled to zero, under $1 a month: the
// Route 53 private hosted zone of the Cloud Map namespace ($0.50), the
// controller's errors alarm ($0.10), and its one run a minute (within
// Lambda's free tier, else $0.07) with a few table reads and writes (the
// Lambda functions tally the syncs waiting in them in the table, which the
// controller reads instead of CloudWatch's metrics). The VPC (no NAT gateway), its DynamoDB
// gateway endpoint, the ECS cluster, the HTTP API's VPC link and the
// schedule cost nothing. Running: the task (0.25 vCPU, 0.5 GB, ARM, Spot)
// and its public IPv4 address ($0.005 an hour), and Cloud Map's discovery
// calls from API Gateway ($1 a million).
const (
	SyncTierLambda  = "lambda"
	SyncTierFargate = "fargate"

	// TierFunction is the controller, built by `make build` into
	// dist/tier.zip from functions/tier; only syncTier=fargate needs it.
	TierFunction = "tier"

	// DefaultSyncImageRepository is the ECR repository `make deploy` pushes
	// the tier's image to (scripts/syncimage push -repository).
	DefaultSyncImageRepository = "cirrus-sync"

	syncTierPort         = 8008  // CIRRUS_CLIENT_LISTEN; the image exposes it
	syncTierCPU          = 256   // 0.25 vCPU, Fargate's smallest
	syncTierMemoryMB     = 512   // the least Fargate allows with 0.25 vCPU
	syncTierStopSeconds  = 30    // SIGTERM answers the waiting polls at once; the rest is margin
	syncTierPollMS       = 25000 // woken through the news queue, a wait reads its user's stream when it begins and ends
	syncNewsRetention    = 60    // seconds, SQS's least: news is only worth something while a poll waits
	syncNewsVisibility   = 30    // seconds
	tierMemoryMB         = 128
	tierTimeoutSeconds   = 60 // one run a minute; a run never overlaps the next
	syncNamespaceName    = "cirrus-sync.internal"
	syncCloudMapName     = "sync"
	syncTierDNSTTL       = 10 // seconds; API Gateway asks Cloud Map's API, not DNS
	syncTierStreamPrefix = "sync"
)

// SyncRoutes are the routes the tier serves, each an explicit route of the
// HTTP API (more specific than /_matrix/client/{proxy+}, so it wins) whose
// target the controller switches between the client function and the tier.
var SyncRoutes = []string{
	"/_matrix/client/v3/sync",
	"/_matrix/client/r0/sync",
	"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
	"/_matrix/client/v4/sync",
}

// SyncTierHealthPath is the tier's health check (shared/server.HealthPath),
// routed to the tier alone.
const SyncTierHealthPath = "/_cirrus/health"

var (
	imageDigestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// ECR's rule for repository names.
	ecrRepositoryRE = regexp.MustCompile(`^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$`)
)

// syncImageDigestFile is where `make image` (scripts/syncimage build)
// writes the digest of the image it built.
func syncImageDigestFile(distDir string) string {
	return filepath.Join(distDir, "sync-image", "digest")
}

// validateSyncTier fills the sync tier's defaults and checks its values;
// DistDir must be set.
func (p *CirrusStackProps) validateSyncTier() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	p.SyncTier = strings.ToLower(p.SyncTier)
	switch p.SyncTier {
	case "":
		p.SyncTier = SyncTierLambda
		return nil
	case SyncTierLambda:
		return nil
	case SyncTierFargate:
	default:
		bad("context value syncTier=%q is not %s (the default: /sync waits in the client function) or %s (a sync tier on Fargate for many waiting clients)", p.SyncTier, SyncTierLambda, SyncTierFargate)
		return errs
	}
	if p.SyncImageRepository == "" {
		p.SyncImageRepository = DefaultSyncImageRepository
	}
	if len(p.SyncImageRepository) < 2 || len(p.SyncImageRepository) > 256 || !ecrRepositoryRE.MatchString(p.SyncImageRepository) {
		bad("context value syncImageRepository=%q is not an ECR repository name such as %s", p.SyncImageRepository, DefaultSyncImageRepository)
	}
	if p.SyncImage == "" {
		file := syncImageDigestFile(p.DistDir)
		b, err := os.ReadFile(file)
		switch {
		case errors.Is(err, os.ErrNotExist):
			bad("syncTier=%s needs the sync tier's image, and %s is missing: run `make image` first (or pass -c syncImage=sha256:... of an image in the %s repository)", SyncTierFargate, file, p.SyncImageRepository)
		case err != nil:
			bad("syncTier=%s: reading the image digest: %v", SyncTierFargate, err)
		default:
			p.SyncImage = strings.TrimSpace(string(b))
			if !imageDigestRE.MatchString(p.SyncImage) {
				bad("%s holds %q, not an image digest sha256:<64 hex digits>: run `make image` again", file, p.SyncImage)
			}
		}
	} else if !imageDigestRE.MatchString(p.SyncImage) {
		bad("context value syncImage=%q is not an image digest sha256:<64 hex digits> (what `make image` prints)", p.SyncImage)
	}
	zip := filepath.Join(p.DistDir, TierFunction+".zip")
	if _, err := os.Stat(zip); err != nil {
		bad("function code %s is missing: run `make build` first (syncTier=%s needs the controller)", zip, SyncTierFargate)
	}
	return errs
}

// syncNewsQueue is the queue through which whatever writes sync news wakes
// the tier's waiting polls at once (shared/sync news): without the tier
// nothing reads it, so it exists only with it.
func (s *builder) syncNewsQueue() {
	if s.p.SyncTier != SyncTierFargate {
		return
	}
	s.news = awssqs.NewQueue(s.stack, jsii.String("SyncNewsQueue"), &awssqs.QueueProps{
		RetentionPeriod:   awscdk.Duration_Seconds(jsii.Number(syncNewsRetention)),
		VisibilityTimeout: awscdk.Duration_Seconds(jsii.Number(syncNewsVisibility)),
		Encryption:        awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:        jsii.Bool(true),
	})
}

// newsEnv tells a writer of sync news where to send it.
func (s *builder) newsEnv(env map[string]*string) {
	if s.news != nil {
		env["CIRRUS_SYNC_NEWS_QUEUE_URL"] = s.news.QueueUrl()
	}
}

// newsSenders lets the writers of sync news send to the news queue.
func (s *builder) newsSenders(fns ...awslambda.Function) {
	if s.news == nil {
		return
	}
	for _, fn := range fns {
		fn.AddToRolePolicy(allow("SyncNewsSend", []string{"sqs:SendMessage"}, s.news.QueueArn()))
	}
}

// syncTier holds the tier's constructs that the controller, the alarms and
// the outputs name.
type syncTier struct {
	cluster           awsecs.Cluster
	service           awsecs.FargateService
	container         awsecs.ContainerDefinition
	logs              awslogs.LogGroup
	routes            []awsapigatewayv2.HttpRoute
	lambdaIntegration *string
	tierIntegration   *string
	controller        awslambda.Function
}

func (s *builder) syncTier() {
	if s.p.SyncTier != SyncTierFargate {
		return
	}
	t := &syncTier{}
	s.tier = t
	vpc, linkSG, taskSG := s.syncNetwork()
	s.syncService(t, vpc, taskSG)
	s.syncRoutes(t, vpc, linkSG)
	s.tierController(t)
}

// syncNetwork is a VPC without NAT gateways (one costs $0.045 an hour
// before traffic): the task gets a public IP to reach ECR, Secrets Manager
// and SQS, and DynamoDB through a free gateway endpoint. Nothing can reach
// the task but the API's VPC link.
func (s *builder) syncNetwork() (awsec2.Vpc, awsec2.SecurityGroup, awsec2.SecurityGroup) {
	vpc := awsec2.NewVpc(s.stack, jsii.String("SyncVpc"), &awsec2.VpcProps{
		MaxAzs:      jsii.Number(2),
		NatGateways: jsii.Number(0),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{{
			Name:       jsii.String("public"),
			SubnetType: awsec2.SubnetType_PUBLIC,
			CidrMask:   jsii.Number(24),
		}},
		GatewayEndpoints: &map[string]*awsec2.GatewayVpcEndpointOptions{
			"DynamoDb": {Service: awsec2.GatewayVpcEndpointAwsService_DYNAMODB()},
		},
		// Restricting the default security group takes a custom resource
		// (a Lambda function of its own); nothing here uses that group.
		RestrictDefaultSecurityGroup: jsii.Bool(false),
	})
	linkSG := awsec2.NewSecurityGroup(s.stack, jsii.String("SyncVpcLinkSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("Cirrus: the HTTP API VPC link to the sync tier"),
		AllowAllOutbound: jsii.Bool(false),
	})
	taskSG := awsec2.NewSecurityGroup(s.stack, jsii.String("SyncTaskSecurityGroup"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("Cirrus: the sync tier tasks"),
		AllowAllOutbound: jsii.Bool(false),
	})
	port := awsec2.Port_Tcp(jsii.Number(syncTierPort))
	taskSG.AddIngressRule(linkSG, port, jsii.String("Sync requests from the HTTP API's VPC link"), jsii.Bool(false))
	linkSG.AddEgressRule(taskSG, port, jsii.String("Sync requests to the tier"), jsii.Bool(false))
	// Every AWS API the task calls, and ECR's image layers (S3), are HTTPS.
	taskSG.AddEgressRule(awsec2.Peer_AnyIpv4(), awsec2.Port_Tcp(jsii.Number(443)), jsii.String("HTTPS to AWS APIs (ECR, S3, Secrets Manager, SQS, DynamoDB)"), jsii.Bool(false))
	return vpc, linkSG, taskSG
}

// syncService is the tier itself: an ECS service of desired count 0 in the
// template, which the controller sets afterwards, registered in Cloud Map
// for the API's integration to find. CloudFormation sends DesiredCount with
// every update of the service (a new image is one): a deploy while the tier
// runs sets it back to 0, the controller sends the routes back to Lambda
// within a minute (no fresh status) and scales up again on the next measure.
// Leaving the count out of the template would keep the controller's, but
// start a task when the stack is created.
func (s *builder) syncService(t *syncTier, vpc awsec2.Vpc, taskSG awsec2.SecurityGroup) {
	// The task's rights, and nothing else: the table as the client
	// function has it, the signing key seed, sending federation work
	// (presence that /sync's set_presence queues), reading the news queue,
	// large answers.
	role := awsiam.NewRole(s.stack, jsii.String("SyncTaskRole"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("ecs-tasks.amazonaws.com"), nil),
		Description: jsii.String("Cirrus sync tier task"),
	})
	indexArn := awscdk.Fn_Join(jsii.String(""), &[]*string{s.table.TableArn(), jsii.String("/index/*")})
	role.AddToPolicy(allow("TableItems", tableItemActions, s.table.TableArn()))
	role.AddToPolicy(allow("TableQueries", tableQueryActions, s.table.TableArn(), indexArn))
	role.AddToPolicy(allow("SigningKeySeed", []string{"secretsmanager:GetSecretValue"}, s.seed.SecretArn()))
	role.AddToPolicy(allow("FederationQueueSend", []string{"sqs:SendMessage"}, s.queue.QueueArn()))
	role.AddToPolicy(allow("SyncNewsReceive", []string{"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}, s.news.QueueArn()))
	// An initial sync over the limit goes to the large responses bucket as
	// the client function's does (GetObject: its presigned URL acts with
	// the task's rights).
	role.AddToPolicy(allow("LargeResponses", []string{"s3:PutObject", "s3:GetObject"}, s.largeResponses.ArnForObjects(jsii.String(LargeResponsePrefix+"*"))))

	task := awsecs.NewFargateTaskDefinition(s.stack, jsii.String("SyncTask"), &awsecs.FargateTaskDefinitionProps{
		Cpu:            jsii.Number(syncTierCPU),
		MemoryLimitMiB: jsii.Number(syncTierMemoryMB),
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture:       awsecs.CpuArchitecture_ARM64(),
			OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
		TaskRole: role,
		// The execution role CDK makes may pull from the repository and
		// write to the log group, nothing more.
	})
	t.logs = awslogs.NewLogGroup(s.stack, jsii.String("SyncTierLogs"), &awslogs.LogGroupProps{
		Retention:     logRetention,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	env := s.commonEnv()
	env["CIRRUS_QUEUE_URL"] = s.queue.QueueUrl()
	s.newsEnv(env)
	env["CIRRUS_SYNC_POLL_INTERVAL_MS"] = jsii.String(strconv.Itoa(syncTierPollMS))
	env["CIRRUS_LARGE_RESPONSE_BUCKET"] = s.largeResponses.BucketName()
	env["CIRRUS_CLIENT_LISTEN"] = jsii.String(":" + strconv.Itoa(syncTierPort))
	// The same cap as the client function's (shared/config's default):
	// the HTTP API ends the tier's requests at 30 s too.
	env["CIRRUS_SYNC_MAX_TIMEOUT_MS"] = jsii.String(strconv.Itoa(SyncLongPollCap * 1000))
	repo := awsecr.Repository_FromRepositoryName(s.stack, jsii.String("SyncImageRepository"), jsii.String(s.p.SyncImageRepository))
	t.container = task.AddContainer(jsii.String("sync"), &awsecs.ContainerDefinitionOptions{
		// By digest: a deploy runs exactly the image `make image` built.
		Image: awsecs.ContainerImage_FromEcrRepository(repo, jsii.String(s.p.SyncImage)),
		// The image's entrypoint is /cirrus.
		Command:      jsii.Strings("sync-tier"),
		PortMappings: &[]*awsecs.PortMapping{{ContainerPort: jsii.Number(syncTierPort), Protocol: awsecs.Protocol_TCP}},
		Environment:  &env,
		Logging: awsecs.LogDriver_AwsLogs(&awsecs.AwsLogDriverProps{
			StreamPrefix: jsii.String(syncTierStreamPrefix),
			LogGroup:     t.logs,
		}),
		StopTimeout: awscdk.Duration_Seconds(jsii.Number(syncTierStopSeconds)),
	})

	t.cluster = awsecs.NewCluster(s.stack, jsii.String("SyncCluster"), &awsecs.ClusterProps{
		Vpc:                            vpc,
		EnableFargateCapacityProviders: jsii.Bool(true),
		// Container Insights bills its metrics.
		ContainerInsightsV2: awsecs.ContainerInsights_DISABLED,
	})
	// Spot costs about a third of on-demand; an interruption sends the
	// tier SIGTERM (it answers its polls, clients poll again) and the
	// controller sends the routes back to Lambda until ECS has replaced
	// it. FARGATE at weight 0 is there for an operator to raise.
	strategy := []*awsecs.CapacityProviderStrategy{{CapacityProvider: jsii.String("FARGATE_SPOT"), Weight: jsii.Number(1)}, {CapacityProvider: jsii.String("FARGATE"), Weight: jsii.Number(0)}}
	if !s.p.SyncTierSpot {
		strategy = []*awsecs.CapacityProviderStrategy{{CapacityProvider: jsii.String("FARGATE"), Weight: jsii.Number(1)}}
	}
	// A private DNS namespace, which costs a Route 53 private hosted zone
	// ($0.50 a month): the HTTP API's Cloud Map integration needs each
	// instance's port (AWS_INSTANCE_PORT), which ECS registers only with an
	// SRV record, and SRV records need a DNS namespace (ECS, and CDK, refuse
	// service discovery in an API-only HTTP namespace).
	namespace := awsservicediscovery.NewPrivateDnsNamespace(s.stack, jsii.String("SyncNamespace"), &awsservicediscovery.PrivateDnsNamespaceProps{
		Name:        jsii.String(syncNamespaceName),
		Vpc:         vpc,
		Description: jsii.String("Cirrus: where the sync tier's tasks register for the HTTP API"),
	})
	t.service = awsecs.NewFargateService(s.stack, jsii.String("SyncService"), &awsecs.FargateServiceProps{
		Cluster:        t.cluster,
		TaskDefinition: task,
		DesiredCount:   jsii.Number(0),
		// One task at most: replacing it may stop the old one first
		// (the controller sends the routes to Lambda meanwhile).
		MinHealthyPercent:          jsii.Number(0),
		MaxHealthyPercent:          jsii.Number(200),
		CapacityProviderStrategies: &strategy,
		AssignPublicIp:             jsii.Bool(true),
		VpcSubnets:                 &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PUBLIC},
		SecurityGroups:             &[]awsec2.ISecurityGroup{taskSG},
		CloudMapOptions: &awsecs.CloudMapOptions{
			CloudMapNamespace: namespace,
			Name:              jsii.String(syncCloudMapName),
			DnsRecordType:     awsservicediscovery.DnsRecordType_SRV,
			DnsTtl:            awscdk.Duration_Seconds(jsii.Number(syncTierDNSTTL)),
			Container:         t.container,
			ContainerPort:     jsii.Number(syncTierPort),
		},
	})
	// A strategy may name only the cluster's capacity providers: the
	// service waits for their association (a child of the cluster).
	t.service.Node().AddDependency(t.cluster)
	// No circuit breaker: at desired count 0, the tier's usual state, a
	// deployment is done at once; at 1, a tier that cannot start is the
	// controller's to end (desired 0 after 15 minutes without a status,
	// which also ends a deployment waiting for it), and its routes stay on
	// Lambda meanwhile.
	awscdk.Annotations_Of(t.service).AcknowledgeWarning(jsii.String("@aws-cdk/aws-ecs:shouldUseCircuitBreaker"),
		jsii.String("the sync tier's controller stops a tier that cannot start"))
}

// syncRoutes gives the four sync routes routes of their own, on the client
// function's integration to start with (which also gives API Gateway the
// right to invoke it on their paths), and makes the tier's integration,
// through the VPC link to the Cloud Map service, for the controller to
// switch them to. No route targets it in the template, so it is an
// HttpIntegration of its own, with what HttpServiceDiscoveryIntegration
// would give: HTTP_PROXY, ANY, payload 1.0, over the VPC link.
func (s *builder) syncRoutes(t *syncTier, vpc awsec2.Vpc, linkSG awsec2.SecurityGroup) {
	link := awsapigatewayv2.NewVpcLink(s.stack, jsii.String("SyncVpcLink"), &awsapigatewayv2.VpcLinkProps{
		Vpc:            vpc,
		Subnets:        &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PUBLIC},
		SecurityGroups: &[]interfacesawsec2.ISecurityGroupRef{linkSG},
	})
	tier := awsapigatewayv2.NewHttpIntegration(s.stack, jsii.String("SyncTierIntegration"), &awsapigatewayv2.HttpIntegrationProps{
		HttpApi:              s.api,
		IntegrationType:      awsapigatewayv2.HttpIntegrationType_HTTP_PROXY,
		IntegrationUri:       t.service.CloudMapService().ServiceArn(),
		Method:               awsapigatewayv2.HttpMethod_ANY,
		ConnectionType:       awsapigatewayv2.HttpConnectionType_VPC_LINK,
		ConnectionId:         link.VpcLinkId(),
		PayloadFormatVersion: awsapigatewayv2.PayloadFormatVersion_VERSION_1_0(),
	})
	t.tierIntegration = tier.IntegrationId()
	// The tier's health check, always on the tier: the controller routes
	// the syncs to the tier only once it answers 200 through the API, the
	// whole path (VPC link, Cloud Map, task) working, and its requests
	// wake a VPC link gone inactive after 60 days without traffic.
	awsapigatewayv2.NewCfnRoute(s.stack, jsii.String("SyncTierHealthRoute"), &awsapigatewayv2.CfnRouteProps{
		ApiId:    s.api.ApiId(),
		RouteKey: jsii.String("GET " + SyncTierHealthPath),
		Target:   awscdk.Fn_Join(jsii.String(""), &[]*string{jsii.String("integrations/"), t.tierIntegration}),
	})
	for _, path := range SyncRoutes {
		routes := s.api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
			Path:        jsii.String(path),
			Methods:     &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_ANY},
			Integration: s.clientIntegration,
		})
		t.routes = append(t.routes, (*routes)[0])
	}
	t.lambdaIntegration = s.integrationID("ClientIntegration")
}

// integrationID is the ID of the API's integration made for a route
// integration of that name (HttpLambdaIntegration makes it under the first
// route it serves, and does not say its ID).
func (s *builder) integrationID(name string) *string {
	for _, c := range *s.api.Node().FindAll(constructs.ConstructOrder_PREORDER) {
		if i, ok := c.(awsapigatewayv2.HttpIntegration); ok && *i.Node().Id() == name {
			return i.IntegrationId()
		}
	}
	panic("cirrus stack: the API has no integration " + name)
}

// tierController is the function that sizes the tier and points the sync
// routes, every minute. Its rights: its memory, the tier's statuses and the
// tally of syncs waiting in Lambda in the table (shared/synctier), the one
// service, the four routes.
func (s *builder) tierController(t *syncTier) {
	var routeIDs []*string
	var routeArns []*string
	for _, r := range t.routes {
		routeIDs = append(routeIDs, r.RouteId())
		routeArns = append(routeArns, awscdk.Fn_Join(jsii.String(""), &[]*string{
			jsii.String("arn:"), awscdk.Aws_PARTITION(), jsii.String(":apigateway:"), awscdk.Aws_REGION(),
			jsii.String("::/apis/"), s.api.ApiId(), jsii.String("/routes/"), r.RouteId(),
		}))
	}
	env := map[string]*string{
		"CIRRUS_DYNAMODB_TABLE":              s.table.TableName(),
		"CIRRUS_TIER_CLUSTER":                t.cluster.ClusterName(),
		"CIRRUS_TIER_SERVICE":                t.service.ServiceName(),
		"CIRRUS_TIER_API_ID":                 s.api.ApiId(),
		"CIRRUS_TIER_ROUTE_IDS":              awscdk.Fn_Join(jsii.String(","), &routeIDs),
		"CIRRUS_TIER_LAMBDA_INTEGRATION_ID":  t.lambdaIntegration,
		"CIRRUS_TIER_FARGATE_INTEGRATION_ID": t.tierIntegration,
		"CIRRUS_TIER_HEALTH_URL":             jsii.String("https://" + s.p.DomainName + SyncTierHealthPath),
	}
	t.controller = s.function(TierFunction, tierMemoryMB, tierTimeoutSeconds, env)
	t.controller.AddToRolePolicy(allow("TierTable", []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}, s.table.TableArn()))
	t.controller.AddToRolePolicy(allow("TierService", []string{"ecs:DescribeServices", "ecs:UpdateService"}, t.service.ServiceArn()))
	t.controller.AddToRolePolicy(allow("TierRoutes", []string{"apigateway:GET", "apigateway:PATCH"}, routeArns...))
	rule := awsevents.NewRule(s.stack, jsii.String("TierSchedule"), &awsevents.RuleProps{
		Description: jsii.String("Cirrus: the sync tier's controller, every minute (functions/tier)"),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Minutes(jsii.Number(1))),
	})
	// A missed run is not retried: the next minute's looks afresh.
	rule.AddTarget(awseventstargets.NewLambdaFunction(t.controller, &awseventstargets.LambdaFunctionProps{
		RetryAttempts: jsii.Number(0),
		MaxEventAge:   awscdk.Duration_Seconds(jsii.Number(60)),
	}))
}

// syncTierOutputs are what an operator looks at or acts on.
func (s *builder) syncTierOutputs(out func(id, description string, value *string)) {
	t := s.tier
	if t == nil {
		return
	}
	var routeIDs []*string
	for _, r := range t.routes {
		routeIDs = append(routeIDs, r.RouteId())
	}
	out("SyncTierCluster", "The sync tier's ECS cluster", t.cluster.ClusterName())
	out("SyncTierService", "The sync tier's ECS service (its desired count is the controller's: 0 or 1)", t.service.ServiceName())
	out("SyncTierImage", "The image the sync tier runs", t.container.ImageName())
	out("SyncTierLogGroup", "The sync tier's logs", t.logs.LogGroupName())
	out("SyncTierController", "The function that scales the tier and switches the sync routes every minute (its logs say why)", t.controller.FunctionName())
	out("SyncTierApiId", "The HTTP API whose sync routes the controller switches", s.api.ApiId())
	out("SyncTierRouteIds", "The four sync routes", awscdk.Fn_Join(jsii.String(","), &routeIDs))
	out("SyncTierLambdaIntegrationId", "The sync routes' target integrations/<this> when /sync runs in the client function", t.lambdaIntegration)
	out("SyncTierFargateIntegrationId", "The sync routes' target integrations/<this> when /sync runs in the tier", t.tierIntegration)
	out("SyncNewsQueueUrl", "The queue that wakes the tier's waiting polls", s.news.QueueUrl())
}
