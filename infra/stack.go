package main

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2integrations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscertificatemanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambdaeventsources"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsroute53"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsroute53targets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsses"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssnssubscriptions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// The table as docs/storage.md and shared/store.TableSchema define it; a test
// reads shared/store/store.go and fails if the two drift apart.
const (
	tablePartitionKey = "pk"
	tableSortKey      = "sk"
	tableIndexName    = "gsi1"
	tableIndexPK      = "gsi1pk"
	tableIndexSK      = "gsi1sk"
	tableTTLAttribute = "expires_at"
)

// Function sizing. API Gateway's HTTP API ends an integration after 30 s, so
// the client function's timeout is 30 s and the /sync long-poll must be capped
// below it: SyncLongPollCap (25 s) leaves 5 s for the rest of the request.
const (
	SyncLongPollCap       = 25  // seconds; the most a /sync waits for news
	clientTimeoutSeconds  = 30  // above SyncLongPollCap, at API Gateway's limit
	federationTimeout     = 29  // seconds; under API Gateway's 30 s
	senderTimeoutSeconds  = 60  // one batch of outbound federation sends
	loaderTimeoutSeconds  = 900 // Lambda's most: a room's whole state after a partial-state join, minutes for 50,000 members
	queueVisibilityFactor = 6   // AWS's advice for SQS event sources: 6x the function timeout
	queueMaxReceiveCount  = 5   // tries before a message goes to the dead-letter queue
	clientMemoryMB        = 256
	federationMemoryMB    = 256
	senderMemoryMB        = 256
	loaderMemoryMB        = 1024 // 50,000 members' state is ~50 MB of JSON, held parsed at once; the CPU share speeds the signature checks
	logRetention          = awslogs.RetentionDays_ONE_MONTH
	apiRateLimit          = 200 // requests per second across the API (stage default)
	apiBurstLimit         = 400
)

// Functions are the Lambda functions of the stack, each built by `make build`
// into dist/<name>.zip. The loader runs the sender's zip: one dispatcher
// handles every kind of job, whichever queue delivers it.
var Functions = []string{"client", "federation", "sender"}

// CirrusStackProps are the operator's choices, read from CDK context values
// so that a deployment is `cdk deploy -c domainName=matrix.example.org ...`.
type CirrusStackProps struct {
	awscdk.StackProps
	// ServerName is the Matrix server name (the part after ":" in user IDs);
	// DomainName when not given.
	ServerName string
	// DomainName is where the API answers; it may differ from ServerName,
	// which then delegates through .well-known and the SRV records.
	DomainName string
	// HostedZoneID and HostedZoneName are a Route 53 public zone holding
	// DomainName: DNS records and certificate validation go there. Both or neither.
	HostedZoneID, HostedZoneName string
	// CertificateArn is an ACM certificate for DomainName in the stack's
	// region; without one, the stack requests a DNS-validated certificate.
	CertificateArn string
	// MailFrom is the sender of verification and reset mail; the SES identity
	// is its domain. Default noreply@<ServerName>.
	MailFrom string
	// EnableRegistration opens POST /register to anyone.
	EnableRegistration bool
	// EnableNotifs mails users about messages left unread
	// (email.enable_notifs): email pushers, and one for each user who
	// registers with an address.
	EnableNotifs bool
	// AlarmEmail is subscribed to the alarm topic when given.
	AlarmEmail string
	// WebClientLocation is the web client the page at / links to; when
	// empty, the server's default (config.DefaultWebClient).
	WebClientLocation string
	// DistDir holds the function zips (context value distDir); when empty,
	// the dist/ folder of the repository.
	DistDir string
	// TurnURIs are the TURN servers clients relay calls through (context
	// value turnUris, comma-separated), and TurnSharedSecretArn the Secrets
	// Manager secret they share with the server (coturn's
	// static-auth-secret). The operator makes the secret, so that its value
	// is never in the template; both or neither.
	TurnURIs            []string
	TurnSharedSecretArn string
	// MediaRemoteCacheDays is how long copies of other servers' media stay
	// in the media bucket (context value mediaRemoteCacheDays) before S3
	// deletes them; a later request fetches them again. Default 30.
	MediaRemoteCacheDays int
	// MediaLocalLifetime and MediaRemoteLifetime are media_retention's
	// local_media_lifetime and remote_media_lifetime (context values
	// mediaLocalLifetime, mediaRemoteLifetime: durations such as 90d):
	// media unused that long is deleted by an hourly run in the sender.
	// Unset, media is kept, and the sender has no rights on the bucket.
	MediaLocalLifetime, MediaRemoteLifetime string
	// SyncTier is where /sync long-polls wait (context value syncTier):
	// SyncTierLambda (the default) in the client function, as every other
	// request; SyncTierFargate adds the sync tier (synctier.go): a
	// long-running process on Fargate the routes switch to when enough
	// clients wait at once.
	SyncTier string
	// SyncTierSpot runs the tier on Fargate Spot (context value
	// syncTierSpot, default true); false, on Fargate at the on-demand price.
	SyncTierSpot bool
	// SyncImage is the digest (sha256:...) of the tier's image (context
	// value syncImage); when empty, what `make image` wrote to
	// <DistDir>/sync-image/digest. SyncImageRepository is the ECR repository
	// holding it (context value syncImageRepository, default cirrus-sync),
	// which the push makes: the stack only reads it.
	SyncImage, SyncImageRepository string
}

// DefaultMediaRemoteCacheDays is MediaRemoteCacheDays when not given.
const DefaultMediaRemoteCacheDays = 30

// contextKeys are the context values the stack reads.
var contextKeys = []string{"domainName", "serverName", "hostedZoneId", "hostedZoneName", "certificateArn", "mailFrom", "enableRegistration", "enableNotifs", "alarmEmail", "webClientLocation", "distDir", "turnUris", "turnSharedSecretArn", "mediaRemoteCacheDays", "mediaLocalLifetime", "mediaRemoteLifetime", "syncTier", "syncTierSpot", "syncImage", "syncImageRepository"}

// PropsFromContext reads the stack's context values (from -c key=value or
// cdk.json). A value of the wrong type is an error; missing ones are left to
// Validate.
func PropsFromContext(app awscdk.App) (*CirrusStackProps, error) {
	var errs []error
	str := func(key string) string {
		switch v := app.Node().TryGetContext(jsii.String(key)).(type) {
		case nil:
			return ""
		case string:
			return strings.TrimSpace(v)
		default:
			errs = append(errs, fmt.Errorf("context value %s must be a string, got %v", key, v))
			return ""
		}
	}
	p := &CirrusStackProps{
		DomainName:          str("domainName"),
		ServerName:          str("serverName"),
		HostedZoneID:        str("hostedZoneId"),
		HostedZoneName:      str("hostedZoneName"),
		CertificateArn:      str("certificateArn"),
		MailFrom:            str("mailFrom"),
		AlarmEmail:          str("alarmEmail"),
		WebClientLocation:   str("webClientLocation"),
		DistDir:             str("distDir"),
		TurnSharedSecretArn: str("turnSharedSecretArn"),
		SyncTier:            str("syncTier"),
		SyncImage:           str("syncImage"),
		SyncImageRepository: str("syncImageRepository"),
	}
	if uris := str("turnUris"); uris != "" {
		// An empty list from a value such as "," is left to Validate, which
		// then says that turnUris names no URI.
		p.TurnURIs = []string{}
		for _, u := range strings.Split(uris, ",") {
			if u = strings.TrimSpace(u); u != "" {
				p.TurnURIs = append(p.TurnURIs, u)
			}
		}
	}
	flag := func(key string) bool {
		switch v := app.Node().TryGetContext(jsii.String(key)).(type) {
		case nil:
		case bool:
			return v
		case string:
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("context value %s=%q is not true or false", key, v))
			}
			return b
		default:
			errs = append(errs, fmt.Errorf("context value %s must be true or false, got %v", key, v))
		}
		return false
	}
	p.EnableRegistration = flag("enableRegistration")
	p.EnableNotifs = flag("enableNotifs")
	// Spot unless told otherwise.
	p.SyncTierSpot = app.Node().TryGetContext(jsii.String("syncTierSpot")) == nil || flag("syncTierSpot")
	// -c gives a string, cdk.json a number. Zero in the props means the
	// default, but given here it is a mistake, as S3 expires after a day at
	// the soonest.
	switch v := app.Node().TryGetContext(jsii.String("mediaRemoteCacheDays")).(type) {
	case nil:
	case float64, string:
		n, err := strconv.Atoi(strings.TrimSpace(fmt.Sprint(v)))
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("context value mediaRemoteCacheDays=%v is not a whole number of days, 1 or more (default %d)", v, DefaultMediaRemoteCacheDays))
		}
		p.MediaRemoteCacheDays = n
	default:
		errs = append(errs, fmt.Errorf("context value mediaRemoteCacheDays must be a number of days, got %v", v))
	}
	for key, dst := range map[string]*string{"mediaLocalLifetime": &p.MediaLocalLifetime, "mediaRemoteLifetime": &p.MediaRemoteLifetime} {
		if v := app.Node().TryGetContext(jsii.String(key)); v != nil {
			*dst = strings.TrimSpace(fmt.Sprint(v))
		}
	}
	if account, region := os.Getenv("CDK_DEFAULT_ACCOUNT"), os.Getenv("CDK_DEFAULT_REGION"); account != "" || region != "" {
		p.Env = &awscdk.Environment{}
		if account != "" {
			p.Env.Account = jsii.String(account)
		}
		if region != "" {
			p.Env.Region = jsii.String(region)
		}
	}
	return p, errors.Join(errs...)
}

// lifetimeRE is a media_retention lifetime as shared/config.ParseDuration
// reads it, which is not imported here.
var lifetimeRE = regexp.MustCompile(`^[1-9][0-9]{0,9}[smhdwy]?$`)

var (
	hostnameRE       = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
	hostedZoneIDRE   = regexp.MustCompile(`^Z[A-Z0-9]{1,31}$`)
	certificateArnRE = regexp.MustCompile(`^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$`)
	// The complete ARN, with the six characters Secrets Manager appends to
	// the name: an IAM grant on the name alone matches no secret.
	secretArnRE = regexp.MustCompile(`^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$`)
	// A comma would split the URI in CIRRUS_TURN_URIS, which carries the
	// list as one string.
	turnURIRE = regexp.MustCompile(`^(turn|turns|stun):[^\s,]+$`)
)

// Validate fills defaults and checks every value, naming each wrong one and
// what to pass instead; all problems are reported at once.
func (p *CirrusStackProps) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	p.DomainName = strings.ToLower(strings.TrimSuffix(p.DomainName, "."))
	p.ServerName = strings.ToLower(strings.TrimSuffix(p.ServerName, "."))
	p.HostedZoneName = strings.ToLower(strings.TrimSuffix(p.HostedZoneName, "."))
	switch {
	case p.DomainName == "":
		bad("context value domainName is missing: pass -c domainName=matrix.example.org, the host name the API answers on")
	case !hostnameRE.MatchString(p.DomainName):
		bad("context value domainName=%q is not a DNS host name such as matrix.example.org", p.DomainName)
	}
	if p.ServerName == "" {
		p.ServerName = p.DomainName
	} else if !hostnameRE.MatchString(p.ServerName) {
		bad("context value serverName=%q is not a DNS host name such as example.org (the part after the colon in user IDs; without a port, since federation goes to %s:443)", p.ServerName, p.DomainName)
	}
	if (p.HostedZoneID == "") != (p.HostedZoneName == "") {
		bad("context values hostedZoneId and hostedZoneName go together: pass both (the Route 53 public zone holding %s) or neither", p.DomainName)
	}
	if p.HostedZoneID != "" && !hostedZoneIDRE.MatchString(p.HostedZoneID) {
		bad("context value hostedZoneId=%q is not a Route 53 zone ID such as Z0123456789ABCDEFGHIJ", p.HostedZoneID)
	}
	if p.HostedZoneName != "" && p.DomainName != "" && !inZone(p.DomainName, p.HostedZoneName) {
		bad("context value domainName=%q is not in the hosted zone %q", p.DomainName, p.HostedZoneName)
	}
	if p.CertificateArn != "" && !certificateArnRE.MatchString(p.CertificateArn) {
		bad("context value certificateArn=%q is not an ACM certificate ARN such as arn:aws:acm:eu-west-1:123456789012:certificate/...", p.CertificateArn)
	}
	if p.MailFrom == "" && p.ServerName != "" {
		p.MailFrom = "noreply@" + p.ServerName
	}
	if p.MailFrom != "" {
		if a, err := mail.ParseAddress(p.MailFrom); err != nil || !hostnameRE.MatchString(mailDomain(a.Address)) {
			bad("context value mailFrom=%q is not a mail address such as \"Cirrus <noreply@example.org>\"", p.MailFrom)
		}
	}
	if p.AlarmEmail != "" {
		if _, err := mail.ParseAddress(p.AlarmEmail); err != nil {
			bad("context value alarmEmail=%q is not a mail address such as ops@example.org", p.AlarmEmail)
		}
	}
	if p.WebClientLocation != "" {
		if u, err := url.Parse(p.WebClientLocation); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("context value webClientLocation=%q is not an absolute http(s) URL such as https://app.element.io/", p.WebClientLocation)
		}
	}
	if p.TurnURIs != nil && len(p.TurnURIs) == 0 {
		bad("context value turnUris names no URI: pass -c turnUris=turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349?transport=tcp")
	}
	for _, u := range p.TurnURIs {
		if !turnURIRE.MatchString(u) {
			bad("context value turnUris: %q is not a TURN URI starting with turn:, turns: or stun:, such as turn:turn.example.org:3478?transport=udp", u)
		}
	}
	if p.TurnSharedSecretArn != "" && !secretArnRE.MatchString(p.TurnSharedSecretArn) {
		bad("context value turnSharedSecretArn=%q is not a Secrets Manager secret ARN such as arn:aws:secretsmanager:eu-west-1:123456789012:secret:coturn-AbCdEf (the complete ARN, with the six characters after the name, as `aws secretsmanager describe-secret` prints it)", p.TurnSharedSecretArn)
	}
	if (p.TurnURIs == nil) != (p.TurnSharedSecretArn == "") {
		bad("context values turnUris and turnSharedSecretArn go together: pass both (the TURN servers, and the secret they share with the server in Secrets Manager) or neither")
	}
	switch {
	case p.MediaRemoteCacheDays == 0:
		p.MediaRemoteCacheDays = DefaultMediaRemoteCacheDays
	case p.MediaRemoteCacheDays < 0:
		bad("context value mediaRemoteCacheDays=%d is not a number of days: pass 1 or more (default %d)", p.MediaRemoteCacheDays, DefaultMediaRemoteCacheDays)
	}
	for _, l := range []struct{ key, v string }{{"mediaLocalLifetime", p.MediaLocalLifetime}, {"mediaRemoteLifetime", p.MediaRemoteLifetime}} {
		if l.v != "" && !lifetimeRE.MatchString(l.v) {
			bad("context value %s=%q is not a duration such as 90d (a whole number followed by s, m, h, d, w or y, as Synapse's media_retention)", l.key, l.v)
		}
	}
	if p.DistDir == "" {
		p.DistDir = defaultDistDir()
	}
	errs = append(errs, p.validateSyncTier()...)
	for _, fn := range Functions {
		zip := filepath.Join(p.DistDir, fn+".zip")
		if _, err := os.Stat(zip); err != nil {
			bad("function code %s is missing: run `make build` first (context value distDir names another folder)", zip)
		}
	}
	return errors.Join(errs...)
}

// defaultDistDir is where `make build` writes: dist/ from the repository
// root, where the CDK CLI runs the app (cdk.json), or ../dist from infra/,
// where `go test` and `go run .` run.
func defaultDistDir() string {
	if _, err := os.Stat(filepath.Join("infra", "go.mod")); err == nil {
		return "dist"
	}
	return filepath.Join("..", "dist")
}

func inZone(host, zone string) bool { return host == zone || strings.HasSuffix(host, "."+zone) }

func mailDomain(address string) string {
	return strings.ToLower(address[strings.LastIndex(address, "@")+1:])
}

// NewCirrusStack defines the deployment: one stack, so that `cdk deploy`
// creates or updates the whole homeserver at once. It checks props first
// and returns their errors without defining anything.
func NewCirrusStack(scope constructs.Construct, id string, props *CirrusStackProps) (awscdk.Stack, error) {
	if props == nil {
		props = &CirrusStackProps{}
	}
	if err := props.Validate(); err != nil {
		return nil, err
	}
	sprops := props.StackProps
	sprops.Description = jsii.String("Cirrus: a serverless Matrix homeserver")
	stack := awscdk.NewStack(scope, &id, &sprops)
	p := *props
	s := &builder{stack: stack, p: &p}
	s.data()
	s.federationQueue()
	s.syncNewsQueue()
	s.mail()
	s.functions()
	s.httpAPI()
	s.syncTier()
	s.dns()
	s.alarms()
	s.outputs()
	return stack, nil
}

// builder keeps the constructs that later parts refer to.
type builder struct {
	stack awscdk.Stack
	p     *CirrusStackProps

	zone                   awsroute53.IPublicHostedZone
	table                  awsdynamodb.Table
	largeResponses         awss3.Bucket
	media                  awss3.Bucket
	seed, sharedSecret     awssecretsmanager.Secret
	queue, dlq             awssqs.Queue
	loadQueue              awssqs.Queue
	identity               awsses.EmailIdentity
	configSet              awsses.ConfigurationSet
	client, federation     awslambda.Function
	sender, loader         awslambda.Function
	api                    awsapigatewayv2.HttpApi
	domain                 awsapigatewayv2.DomainName
	alarmTopic             awssns.Topic
	mailEvents             awssns.Topic
	configurationSetArnStr *string

	// The client function's API integration, which the sync routes start
	// on; and the sync tier's parts, nil without it (synctier.go).
	clientIntegration awsapigatewayv2integrations.HttpLambdaIntegration
	news              awssqs.Queue
	tier              *syncTier
}

func (s *builder) data() {
	if s.p.HostedZoneID != "" {
		s.zone = awsroute53.PublicHostedZone_FromPublicHostedZoneAttributes(s.stack, jsii.String("Zone"), &awsroute53.PublicHostedZoneAttributes{
			HostedZoneId: jsii.String(s.p.HostedZoneID),
			ZoneName:     jsii.String(s.p.HostedZoneName),
		})
	}
	s.table = awsdynamodb.NewTable(s.stack, jsii.String("Table"), &awsdynamodb.TableProps{
		PartitionKey:        &awsdynamodb.Attribute{Name: jsii.String(tablePartitionKey), Type: awsdynamodb.AttributeType_STRING},
		SortKey:             &awsdynamodb.Attribute{Name: jsii.String(tableSortKey), Type: awsdynamodb.AttributeType_STRING},
		BillingMode:         awsdynamodb.BillingMode_PAY_PER_REQUEST,
		TimeToLiveAttribute: jsii.String(tableTTLAttribute),
		PointInTimeRecoverySpecification: &awsdynamodb.PointInTimeRecoverySpecification{
			PointInTimeRecoveryEnabled: jsii.Bool(true),
		},
		DeletionProtection: jsii.Bool(true),
		// The table outlives the stack: deleting the stack never deletes data.
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	s.table.AddGlobalSecondaryIndex(&awsdynamodb.GlobalSecondaryIndexProps{
		IndexName:      jsii.String(tableIndexName),
		PartitionKey:   &awsdynamodb.Attribute{Name: jsii.String(tableIndexPK), Type: awsdynamodb.AttributeType_STRING},
		SortKey:        &awsdynamodb.Attribute{Name: jsii.String(tableIndexSK), Type: awsdynamodb.AttributeType_STRING},
		ProjectionType: awsdynamodb.ProjectionType_ALL,
	})
	// Answers over Lambda's 6 MB (shared/bigbody): the function puts the body
	// here and redirects the client to a presigned URL lasting minutes. The
	// objects are deleted after a day; any web origin may GET them (Element
	// Web follows the redirect with fetch), the URL's signature being the
	// only credential.
	s.largeResponses = awss3.NewBucket(s.stack, jsii.String("LargeResponses"), &awss3.BucketProps{
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		EnforceSSL:        jsii.Bool(true),
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Id:         jsii.String("LargeResponsesExpire"),
			Prefix:     jsii.String(LargeResponsePrefix),
			Expiration: awscdk.Duration_Days(jsii.Number(1)),
		}},
		Cors: &[]*awss3.CorsRule{{
			AllowedMethods: &[]awss3.HttpMethods{awss3.HttpMethods_GET, awss3.HttpMethods_HEAD},
			AllowedOrigins: jsii.Strings("*"),
			AllowedHeaders: jsii.Strings("*"),
			MaxAge:         jsii.Number(3600),
		}},
		// Nothing in it outlives a day.
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	// The content repository (shared/media): uploads, their thumbnails, and
	// copies of other servers' media under MediaRemotePrefix, which S3
	// deletes after MediaRemoteCacheDays (a later request fetches them
	// again). Downloads redirect to presigned URLs, which Element Web follows
	// with fetch from its own origin: CORS GET and HEAD from any origin with
	// any header (Range among them, for seeking in audio and video), the
	// URL's signature being the only credential; the headers a script reads
	// of a ranged or named download are exposed. No versioning: deleting
	// media (retention, the admin API, quarantine) must delete the bytes.
	s.media = awss3.NewBucket(s.stack, jsii.String("Media"), &awss3.BucketProps{
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		EnforceSSL:        jsii.Bool(true),
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Id:         jsii.String("MediaRemoteCacheExpire"),
			Prefix:     jsii.String(MediaRemotePrefix),
			Expiration: awscdk.Duration_Days(jsii.Number(float64(s.p.MediaRemoteCacheDays))),
		}, {
			// Parts of uploads that never completed are billed and
			// invisible: a day is longer than any upload through Lambda.
			Id:                                  jsii.String("MediaAbortIncompleteUploads"),
			AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(1)),
		}},
		Cors: &[]*awss3.CorsRule{{
			AllowedMethods: &[]awss3.HttpMethods{awss3.HttpMethods_GET, awss3.HttpMethods_HEAD},
			AllowedOrigins: jsii.Strings("*"),
			AllowedHeaders: jsii.Strings("*"),
			ExposedHeaders: jsii.Strings(mediaExposedHeaders...),
			MaxAge:         jsii.Number(3600),
		}},
		// Users' files: deleting the stack never deletes them.
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	// Secrets are generated by Secrets Manager at deploy time: their values
	// are never in the template, nor in a function's environment (which names
	// them by ARN; shared/secrets reads them at start).
	gen := &awssecretsmanager.SecretStringGenerator{PasswordLength: jsii.Number(64), ExcludePunctuation: jsii.Bool(true)}
	s.seed = awssecretsmanager.NewSecret(s.stack, jsii.String("SigningKeySeed"), &awssecretsmanager.SecretProps{
		Description:          jsii.String("Cirrus: the seed the server's ed25519 signing key derives from (keys.FromSeed). Keep it: other servers cache the key."),
		GenerateSecretString: gen,
		// A new seed is a new server key: other servers would reject what
		// the old one signed until their caches expire.
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	s.sharedSecret = awssecretsmanager.NewSecret(s.stack, jsii.String("RegistrationSharedSecret"), &awssecretsmanager.SecretProps{
		Description:          jsii.String("Cirrus: the registration shared secret of cirrus register and register_new_matrix_user"),
		GenerateSecretString: gen,
	})
}

func (s *builder) federationQueue() {
	s.dlq = awssqs.NewQueue(s.stack, jsii.String("FederationDeadLetterQueue"), &awssqs.QueueProps{
		RetentionPeriod: awscdk.Duration_Days(jsii.Number(14)),
		Encryption:      awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:      jsii.Bool(true),
	})
	s.queue = awssqs.NewQueue(s.stack, jsii.String("FederationQueue"), &awssqs.QueueProps{
		VisibilityTimeout: awscdk.Duration_Seconds(jsii.Number(queueVisibilityFactor * senderTimeoutSeconds)),
		RetentionPeriod:   awscdk.Duration_Days(jsii.Number(4)),
		Encryption:        awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:        jsii.Bool(true),
		DeadLetterQueue:   &awssqs.DeadLetterQueue{Queue: s.dlq, MaxReceiveCount: jsii.Number(queueMaxReceiveCount)},
	})
	// The jobs that outlast the sender's timeout (shared/server.Server's
	// LongQueue: loading the state of a room joined with partial state),
	// drained by the loader. Their failures go to the same dead-letter
	// queue, which one alarm and one redrive procedure watch.
	s.loadQueue = awssqs.NewQueue(s.stack, jsii.String("LoadQueue"), &awssqs.QueueProps{
		VisibilityTimeout: awscdk.Duration_Seconds(jsii.Number(queueVisibilityFactor * loaderTimeoutSeconds)),
		RetentionPeriod:   awscdk.Duration_Days(jsii.Number(4)),
		Encryption:        awssqs.QueueEncryption_SQS_MANAGED,
		EnforceSSL:        jsii.Bool(true),
		DeadLetterQueue:   &awssqs.DeadLetterQueue{Queue: s.dlq, MaxReceiveCount: jsii.Number(queueMaxReceiveCount)},
	})
}

func (s *builder) mail() {
	s.configSet = awsses.NewConfigurationSet(s.stack, jsii.String("MailConfigurationSet"), &awsses.ConfigurationSetProps{
		ReputationMetrics: jsii.Bool(true),
		SendingEnabled:    jsii.Bool(true),
	})
	addr, _ := mail.ParseAddress(s.p.MailFrom)
	domain := mailDomain(addr.Address)
	identity := awsses.Identity_Domain(jsii.String(domain))
	if s.zone != nil && domain == s.p.HostedZoneName {
		// The zone is the mail domain: CDK adds the three DKIM CNAMEs to it.
		identity = awsses.Identity_PublicHostedZone(s.zone)
	}
	s.identity = awsses.NewEmailIdentity(s.stack, jsii.String("MailIdentity"), &awsses.EmailIdentityProps{
		Identity:         identity,
		ConfigurationSet: s.configSet,
	})
	s.configurationSetArnStr = s.stack.FormatArn(&awscdk.ArnComponents{
		Service:      jsii.String("ses"),
		Resource:     jsii.String("configuration-set"),
		ResourceName: s.configSet.ConfigurationSetName(),
	})
	// Bounces and complaints of the mail sent with the configuration set
	// go to a topic the sender function is subscribed to (functions), which
	// puts the addresses on the suppression list the server honours
	// (shared/mail Suppressions): SES reviews, then pauses, an account
	// whose bounce or complaint rate stays high.
	s.mailEvents = awssns.NewTopic(s.stack, jsii.String("MailEventsTopic"), &awssns.TopicProps{
		DisplayName: jsii.String("Cirrus mail bounces and complaints for " + s.p.ServerName),
	})
	s.configSet.AddEventDestination(jsii.String("MailEvents"), &awsses.ConfigurationSetEventDestinationOptions{
		Destination: awsses.EventDestination_SnsTopic(s.mailEvents),
		Events:      &[]awsses.EmailSendingEvent{awsses.EmailSendingEvent_BOUNCE, awsses.EmailSendingEvent_COMPLAINT},
	})
}

func (s *builder) function(name string, memory, timeout float64, env map[string]*string) awslambda.Function {
	return s.functionOf(name, name, memory, timeout, env)
}

// functionOf is a function named name running the code of another,
// dist/<code>.zip, with its own role and log group.
func (s *builder) functionOf(name, code string, memory, timeout float64, env map[string]*string) awslambda.Function {
	title := strings.ToUpper(name[:1]) + name[1:]
	logs := awslogs.NewLogGroup(s.stack, jsii.String(title+"Logs"), &awslogs.LogGroupProps{
		Retention:     logRetention,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	// A role of its own, without AWSLambdaBasicExecutionRole (which may write
	// to any log group): it writes to its own log group only.
	role := awsiam.NewRole(s.stack, jsii.String(title+"Role"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String("Cirrus " + name + " function"),
	})
	logs.GrantWrite(role)
	return awslambda.NewFunction(s.stack, jsii.String(title+"Function"), &awslambda.FunctionProps{
		Description:  jsii.String("Cirrus " + name + " (functions/" + code + ")"),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: awslambda.Architecture_ARM_64(),
		Handler:      jsii.String("bootstrap"),
		Code:         awslambda.Code_FromAsset(jsii.String(filepath.Join(s.p.DistDir, code+".zip")), nil),
		MemorySize:   jsii.Number(memory),
		Timeout:      awscdk.Duration_Seconds(jsii.Number(timeout)),
		Environment:  &env,
		LogGroup:     logs,
		Role:         role,
	})
}

// Table actions the functions use: item reads and writes (transactions need
// the per-item actions) and Query, also on the index. No Scan, no table or
// stream administration.
var (
	tableItemActions  = []string{"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem"}
	tableQueryActions = []string{"dynamodb:Query"}
)

func allow(sid string, actions []string, resources ...*string) awsiam.PolicyStatement {
	return awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String(sid),
		Actions:   jsii.Strings(actions...),
		Resources: &resources,
	})
}

// commonEnv is the configuration every part of the server reads.
func (s *builder) commonEnv() map[string]*string {
	return map[string]*string{
		"CIRRUS_SERVER_NAME":                 jsii.String(s.p.ServerName),
		"CIRRUS_PUBLIC_BASEURL":              jsii.String("https://" + s.p.DomainName + "/"),
		"CIRRUS_DYNAMODB_TABLE":              s.table.TableName(),
		"CIRRUS_SIGNING_KEY_SEED_SECRET_ARN": s.seed.SecretArn(),
	}
}

func (s *builder) functions() {
	common := func() map[string]*string {
		env := s.commonEnv()
		s.newsEnv(env)
		return env
	}
	clientEnv := common()
	clientEnv["CIRRUS_QUEUE_URL"] = s.queue.QueueUrl()
	clientEnv["CIRRUS_LONG_QUEUE_URL"] = s.loadQueue.QueueUrl()
	clientEnv["CIRRUS_ENABLE_REGISTRATION"] = jsii.String(strconv.FormatBool(s.p.EnableRegistration))
	clientEnv["CIRRUS_EMAIL_NOTIF_FROM"] = jsii.String(s.p.MailFrom)
	clientEnv["CIRRUS_EMAIL_SES_CONFIGURATION_SET"] = s.configSet.ConfigurationSetName()
	clientEnv["CIRRUS_EMAIL_ENABLE_NOTIFS"] = jsii.String(strconv.FormatBool(s.p.EnableNotifs))
	clientEnv["CIRRUS_REGISTRATION_SHARED_SECRET_SECRET_ARN"] = s.sharedSecret.SecretArn()
	if s.p.WebClientLocation != "" {
		clientEnv["CIRRUS_WEB_CLIENT_LOCATION"] = jsii.String(s.p.WebClientLocation)
	}
	if s.p.TurnSharedSecretArn != "" {
		clientEnv["CIRRUS_TURN_URIS"] = jsii.String(strings.Join(s.p.TurnURIs, ","))
		clientEnv["CIRRUS_TURN_SHARED_SECRET_SECRET_ARN"] = jsii.String(s.p.TurnSharedSecretArn)
	}
	clientEnv["CIRRUS_LARGE_RESPONSE_BUCKET"] = s.largeResponses.BucketName()
	clientEnv["CIRRUS_MEDIA_BUCKET"] = s.media.BucketName()
	s.retentionEnv(clientEnv) // the client records accesses
	// The client function's timeout is at API Gateway's 30 s; /sync
	// long-polls are capped at SyncLongPollCap (25 s) to end before it.
	s.client = s.function("client", clientMemoryMB, clientTimeoutSeconds, clientEnv)

	fedEnv := common()
	fedEnv["CIRRUS_QUEUE_URL"] = s.queue.QueueUrl()
	fedEnv["CIRRUS_LONG_QUEUE_URL"] = s.loadQueue.QueueUrl()
	fedEnv["CIRRUS_LARGE_RESPONSE_BUCKET"] = s.largeResponses.BucketName()
	fedEnv["CIRRUS_MEDIA_BUCKET"] = s.media.BucketName()
	s.federation = s.function("federation", federationMemoryMB, federationTimeout, fedEnv)

	// The sender queues work too: a destination's wake-up after its
	// backoff, the rest of a long outbox or inbox for the next invocation.
	senderEnv := common()
	senderEnv["CIRRUS_QUEUE_URL"] = s.queue.QueueUrl()
	// The sender sends notification mail (email pushers), as the client
	// sends validation mail: the same sender and configuration set.
	senderEnv["CIRRUS_EMAIL_NOTIF_FROM"] = jsii.String(s.p.MailFrom)
	senderEnv["CIRRUS_EMAIL_SES_CONFIGURATION_SET"] = s.configSet.ConfigurationSetName()
	senderEnv["CIRRUS_EMAIL_ENABLE_NOTIFS"] = jsii.String(strconv.FormatBool(s.p.EnableNotifs))
	s.retentionEnv(senderEnv)
	s.sender = s.function("sender", senderMemoryMB, senderTimeoutSeconds, senderEnv)

	// The loader is the sender's code on the load queue, with the time and
	// memory a room's whole state takes; what its jobs queue goes where
	// the client's and federation's would.
	loaderEnv := common()
	loaderEnv["CIRRUS_QUEUE_URL"] = s.queue.QueueUrl()
	loaderEnv["CIRRUS_LONG_QUEUE_URL"] = s.loadQueue.QueueUrl()
	s.loader = s.functionOf("loader", "sender", loaderMemoryMB, loaderTimeoutSeconds, loaderEnv)

	// Least privilege: each function gets the table and its index, the
	// secrets it reads, and its side of the queue; only the client and the
	// sender send mail, and only the client reads the registration shared
	// secret.
	indexArn := awscdk.Fn_Join(jsii.String(""), &[]*string{s.table.TableArn(), jsii.String("/index/*")})
	for _, fn := range []awslambda.Function{s.client, s.federation, s.sender, s.loader} {
		fn.AddToRolePolicy(allow("TableItems", tableItemActions, s.table.TableArn()))
		fn.AddToRolePolicy(allow("TableQueries", tableQueryActions, s.table.TableArn(), indexArn))
		fn.AddToRolePolicy(allow("SigningKeySeed", []string{"secretsmanager:GetSecretValue"}, s.seed.SecretArn()))
	}
	s.client.AddToRolePolicy(allow("RegistrationSharedSecret", []string{"secretsmanager:GetSecretValue"}, s.sharedSecret.SecretArn()))
	if s.p.TurnSharedSecretArn != "" {
		// The operator's secret, by its complete ARN: /voip/turnServer is
		// the client function's, and nothing else reads it.
		s.client.AddToRolePolicy(allow("TurnSharedSecret", []string{"secretsmanager:GetSecretValue"}, jsii.String(s.p.TurnSharedSecretArn)))
	}
	for _, fn := range []awslambda.Function{s.client, s.federation} {
		fn.AddToRolePolicy(allow("FederationQueueSend", []string{"sqs:SendMessage"}, s.queue.QueueArn()))
		// Joins run here, and a join with partial state queues the load.
		fn.AddToRolePolicy(allow("LoadQueueSend", []string{"sqs:SendMessage"}, s.loadQueue.QueueArn()))
		// GetObject too: a presigned URL acts with its signer's rights.
		fn.AddToRolePolicy(allow("LargeResponses", []string{"s3:PutObject", "s3:GetObject"}, s.largeResponses.ArnForObjects(jsii.String(LargeResponsePrefix+"*"))))
	}
	// Media: the client uploads, serves, fetches and caches remote media,
	// and deletes (retention, the admin API). GetObject is also what its
	// presigned download URLs act with.
	mediaObjects := s.media.ArnForObjects(jsii.String("*"))
	s.client.AddToRolePolicy(allow("MediaObjects", []string{"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}, mediaObjects))
	// Federation serves this server's media to others (the spec's
	// federation media endpoints serve local media only): it reads, and
	// may store a thumbnail it makes on a first request. It never deletes.
	s.federation.AddToRolePolicy(allow("MediaObjects", []string{"s3:GetObject", "s3:PutObject"}, mediaObjects))
	// ListBucket, on the bucket and no object: without it S3 answers a read
	// of a missing key 403 AccessDenied instead of 404 NoSuchKey, and
	// shared/objects could not tell "not stored" (ErrNotFound) from a
	// denial. Both writers need that answer: storing identical content once
	// (shared/media putContent) asks with a HeadObject whether its SHA-256
	// is already there before every put, and a remote copy that the
	// lifecycle rule expired under its table row must read as missing, to be
	// fetched again rather than answered 500.
	for _, fn := range []awslambda.Function{s.client, s.federation} {
		fn.AddToRolePolicy(allow("MediaList", []string{"s3:ListBucket"}, s.media.BucketArn()))
	}
	for _, fn := range []awslambda.Function{s.sender, s.loader} {
		fn.AddToRolePolicy(allow("FederationQueueSend", []string{"sqs:SendMessage"}, s.queue.QueueArn()))
	}
	s.newsSenders(s.client, s.federation, s.sender, s.loader)
	for _, fn := range []awslambda.Function{s.client, s.sender} {
		fn.AddToRolePolicy(allow("MailFromTheIdentity", []string{"ses:SendEmail"}, s.identity.EmailIdentityArn(), s.configurationSetArnStr))
	}
	// SNS invokes the sender with each bounce or complaint (the
	// subscription adds the permission, from this topic only).
	s.mailEvents.AddSubscription(awssnssubscriptions.NewLambdaSubscription(s.sender, nil))
	// The event source mapping grants the sender what consuming takes:
	// sqs:ReceiveMessage, DeleteMessage, ChangeMessageVisibility, GetQueueAttributes, GetQueueUrl.
	s.sender.AddEventSource(awslambdaeventsources.NewSqsEventSource(s.queue, &awslambdaeventsources.SqsEventSourceProps{
		BatchSize:               jsii.Number(10),
		MaxBatchingWindow:       awscdk.Duration_Seconds(jsii.Number(1)),
		ReportBatchItemFailures: jsii.Bool(true),
	}))
	s.mediaRetention()
	// One job an invocation: each may take the whole timeout, and a batch
	// would have the later ones wait for the earlier.
	s.loader.AddEventSource(awslambdaeventsources.NewSqsEventSource(s.loadQueue, &awslambdaeventsources.SqsEventSourceProps{
		BatchSize:               jsii.Number(1),
		ReportBatchItemFailures: jsii.Bool(true),
	}))
}

// retention reports whether media_retention is on (a lifetime is set).
func (s *builder) retention() bool {
	return s.p.MediaLocalLifetime != "" || s.p.MediaRemoteLifetime != ""
}

// retentionEnv gives a function the media_retention settings and, for the
// sender, the bucket.
func (s *builder) retentionEnv(env map[string]*string) {
	if !s.retention() {
		return
	}
	env["CIRRUS_MEDIA_BUCKET"] = s.media.BucketName()
	if s.p.MediaLocalLifetime != "" {
		env["CIRRUS_MEDIA_RETENTION_LOCAL_MEDIA_LIFETIME"] = jsii.String(s.p.MediaLocalLifetime)
	}
	if s.p.MediaRemoteLifetime != "" {
		env["CIRRUS_MEDIA_RETENTION_REMOTE_MEDIA_LIFETIME"] = jsii.String(s.p.MediaRemoteLifetime)
	}
}

// MediaRetentionEvent is what the schedule invokes the sender with: a
// one-record batch in SQS's shape, so that its one entry point
// (queue.Dispatcher.HandleSQSEvent) runs it as a job of the
// media.retention kind, with no queue in between and no right to send to
// one. The kind is shared/media.RetentionKind.
var MediaRetentionEvent = map[string]any{"Records": []any{map[string]any{
	"messageId":         "media-retention",
	"body":              "{}",
	"messageAttributes": map[string]any{"kind": map[string]any{"dataType": "String", "stringValue": "media.retention"}},
}}}

// mediaRetention schedules the retention run hourly, as Synapse does
// (MEDIA_RETENTION_CHECK_PERIOD_MS), each run bounded (RetentionBatch) and
// the next going on where it stopped; and gives the sender what deleting
// takes: DeleteObject, and ListBucket so that a missing object reads as
// missing (404), not denied. It never reads or writes content.
func (s *builder) mediaRetention() {
	if !s.retention() {
		return
	}
	rule := awsevents.NewRule(s.stack, jsii.String("MediaRetentionSchedule"), &awsevents.RuleProps{
		Description: jsii.String("Cirrus: media_retention, hourly: deletes media unused for its lifetime (shared/media retention.go)"),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Hours(jsii.Number(1))),
	})
	// A failed run is not retried: the next hour's does its work.
	rule.AddTarget(awseventstargets.NewLambdaFunction(s.sender, &awseventstargets.LambdaFunctionProps{
		Event:         awsevents.RuleTargetInput_FromObject(MediaRetentionEvent),
		RetryAttempts: jsii.Number(0),
	}))
	s.sender.AddToRolePolicy(allow("MediaDelete", []string{"s3:DeleteObject"}, s.media.ArnForObjects(jsii.String("*"))))
	s.sender.AddToRolePolicy(allow("MediaList", []string{"s3:ListBucket"}, s.media.BucketArn()))
}

// LargeResponsePrefix is where the functions put answers over Lambda's
// 6 MB in the LargeResponses bucket: shared/bigbody.Prefix (the infra
// module does not import the server's).
const LargeResponsePrefix = "large-responses/"

// MediaRemotePrefix is where the media service caches other servers' media
// in the media bucket (shared/media), the only objects the lifecycle rule
// expires: local media lives as long as retention says.
const MediaRemotePrefix = "remote/"

// mediaExposedHeaders are the answer headers of a presigned media download
// that a script on another origin may read beyond CORS's safelisted ones:
// those of ranged requests (seeking in audio and video), the file name, and
// the ETag a cache revalidates with.
var mediaExposedHeaders = []string{"Content-Range", "Accept-Ranges", "Content-Disposition", "ETag"}

// Routes of the HTTP API, by function.
var (
	// "/" is the page saying the server runs, for whoever opens its address.
	// "/_synapse/client/" holds the pages mail links to: address
	// validation and unsubscribing from notification mail.
	ClientRoutes     = []string{"/", "/_matrix/client/{proxy+}", "/_matrix/media/{proxy+}", "/_synapse/admin/{proxy+}", "/_synapse/client/{proxy+}", "/.well-known/matrix/{proxy+}"}
	FederationRoutes = []string{"/_matrix/federation/{proxy+}", "/_matrix/key/{proxy+}"}
)

func (s *builder) httpAPI() {
	var cert awscertificatemanager.ICertificate
	if s.p.CertificateArn != "" {
		cert = awscertificatemanager.Certificate_FromCertificateArn(s.stack, jsii.String("Certificate"), jsii.String(s.p.CertificateArn))
	} else {
		var validation awscertificatemanager.CertificateValidation
		if s.zone != nil {
			validation = awscertificatemanager.CertificateValidation_FromDns(s.zone)
		} else {
			// Without a zone, the deploy waits until the operator adds the
			// validation CNAME that the ACM console shows.
			validation = awscertificatemanager.CertificateValidation_FromDns(nil)
		}
		cert = awscertificatemanager.NewCertificate(s.stack, jsii.String("Certificate"), &awscertificatemanager.CertificateProps{
			DomainName: jsii.String(s.p.DomainName),
			Validation: validation,
		})
	}
	s.domain = awsapigatewayv2.NewDomainName(s.stack, jsii.String("ApiDomain"), &awsapigatewayv2.DomainNameProps{
		DomainName:     jsii.String(s.p.DomainName),
		Certificate:    cert,
		SecurityPolicy: awsapigatewayv2.SecurityPolicy_TLS_1_2,
	})
	s.api = awsapigatewayv2.NewHttpApi(s.stack, jsii.String("Api"), &awsapigatewayv2.HttpApiProps{
		ApiName:            jsii.String("cirrus-" + strings.ReplaceAll(s.p.DomainName, ".", "-")),
		Description:        jsii.String("Cirrus Matrix homeserver for " + s.p.ServerName),
		CreateDefaultStage: jsii.Bool(false),
	})
	accessLogs := awslogs.NewLogGroup(s.stack, jsii.String("ApiAccessLogs"), &awslogs.LogGroupProps{
		Retention:     logRetention,
		RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	stage := awsapigatewayv2.NewHttpStage(s.stack, jsii.String("DefaultStage"), &awsapigatewayv2.HttpStageProps{
		HttpApi:    s.api,
		StageName:  jsii.String("$default"),
		AutoDeploy: jsii.Bool(true),
		Throttle:   &awsapigatewayv2.ThrottleSettings{RateLimit: jsii.Number(apiRateLimit), BurstLimit: jsii.Number(apiBurstLimit)},
	})
	mapping := awsapigatewayv2.NewApiMapping(s.stack, jsii.String("ApiMapping"), &awsapigatewayv2.ApiMappingProps{
		Api: s.api, DomainName: s.domain, Stage: stage,
	})
	// The mapping names the stage "$default" literally: make it wait for it.
	mapping.Node().AddDependency(stage)
	// Access logs: one JSON line per request. The query string is left out,
	// as clients may put access tokens there, and so is the path, which can
	// hold secrets too (registration tokens in the admin API): the route
	// key says which endpoint, and the function's own log line has the path
	// with such segments masked (httpapi.Logging).
	cfn := stage.Node().DefaultChild().(awsapigatewayv2.CfnStage)
	cfn.SetAccessLogSettings(&awsapigatewayv2.CfnStage_AccessLogSettingsProperty{
		DestinationArn: accessLogs.LogGroupArn(),
		Format:         jsii.String(accessLogFormat),
	})
	add := func(fn awslambda.Function, name string, paths []string) awsapigatewayv2integrations.HttpLambdaIntegration {
		integration := awsapigatewayv2integrations.NewHttpLambdaIntegration(jsii.String(name+"Integration"), fn, &awsapigatewayv2integrations.HttpLambdaIntegrationProps{
			PayloadFormatVersion: awsapigatewayv2.PayloadFormatVersion_VERSION_2_0(),
		})
		for _, path := range paths {
			s.api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
				Path:        jsii.String(path),
				Methods:     &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_ANY},
				Integration: integration,
			})
		}
		return integration
	}
	s.clientIntegration = add(s.client, "Client", ClientRoutes)
	add(s.federation, "Federation", FederationRoutes)
}

const accessLogFormat = `{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","time":"$context.requestTime",` +
	`"method":"$context.httpMethod","routeKey":"$context.routeKey","status":"$context.status",` +
	`"bytes":"$context.responseLength","latencyMs":"$context.responseLatency","integrationMs":"$context.integrationLatency",` +
	`"integrationError":"$context.integrationErrorMessage","userAgent":"$context.identity.userAgent"}`

func (s *builder) dns() {
	if s.zone == nil {
		return
	}
	target := awsroute53.RecordTarget_FromAlias(awsroute53targets.NewApiGatewayv2DomainProperties(
		s.domain.RegionalDomainName(), s.domain.RegionalHostedZoneId()))
	awsroute53.NewARecord(s.stack, jsii.String("ApiAliasA"), &awsroute53.ARecordProps{
		Zone: s.zone, RecordName: jsii.String(s.p.DomainName + "."), Target: target,
	})
	awsroute53.NewAaaaRecord(s.stack, jsii.String("ApiAliasAAAA"), &awsroute53.AaaaRecordProps{
		Zone: s.zone, RecordName: jsii.String(s.p.DomainName + "."), Target: target,
	})
	if inZone(s.p.ServerName, s.p.HostedZoneName) {
		// Federation delegation. Servers since v1.8 of the spec look up
		// _matrix-fed._tcp; older ones only _matrix._tcp, which the spec
		// still lets servers fall back to.
		for _, srv := range []struct{ id, service string }{
			{"FederationSrv", "_matrix-fed._tcp."},
			{"FederationSrvLegacy", "_matrix._tcp."},
		} {
			awsroute53.NewSrvRecord(s.stack, jsii.String(srv.id), &awsroute53.SrvRecordProps{
				Zone:       s.zone,
				RecordName: jsii.String(srv.service + s.p.ServerName + "."),
				Values:     &[]*awsroute53.SrvRecordValue{{Priority: jsii.Number(10), Weight: jsii.Number(0), Port: jsii.Number(443), HostName: jsii.String(s.p.DomainName)}},
				Ttl:        awscdk.Duration_Hours(jsii.Number(1)),
			})
		}
	}
}

func (s *builder) alarms() {
	s.alarmTopic = awssns.NewTopic(s.stack, jsii.String("AlarmTopic"), &awssns.TopicProps{
		DisplayName: jsii.String("Cirrus alarms for " + s.p.ServerName),
	})
	if s.p.AlarmEmail != "" {
		s.alarmTopic.AddSubscription(awssnssubscriptions.NewEmailSubscription(jsii.String(s.p.AlarmEmail), nil))
	}
	action := awscloudwatchactions.NewSnsAction(s.alarmTopic)
	five := awscdk.Duration_Minutes(jsii.Number(5))
	alarm := func(id, description string, metric awscloudwatch.IMetric, threshold float64, op awscloudwatch.ComparisonOperator) {
		a := awscloudwatch.NewAlarm(s.stack, jsii.String(id), &awscloudwatch.AlarmProps{
			AlarmDescription:   jsii.String(description),
			Metric:             metric,
			Threshold:          jsii.Number(threshold),
			ComparisonOperator: op,
			EvaluationPeriods:  jsii.Number(1),
			TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
		})
		a.AddAlarmAction(action)
		a.AddOkAction(action)
	}
	for _, f := range []struct {
		name string
		fn   awslambda.Function
	}{{"Client", s.client}, {"Federation", s.federation}, {"Sender", s.sender}, {"Loader", s.loader}} {
		alarm(f.name+"ErrorsAlarm", "The "+strings.ToLower(f.name)+" function failed (errors, crashes or timeouts) in the last 5 minutes",
			f.fn.MetricErrors(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")}),
			1, awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD)
	}
	if s.tier != nil {
		alarm("TierErrorsAlarm", "The sync tier's controller failed in the last 5 minutes: the sync routes and the tier's size stay as they were",
			s.tier.controller.MetricErrors(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")}),
			1, awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD)
	}
	alarm("DeadLetterQueueAlarm", "Federation work failed "+strconv.Itoa(queueMaxReceiveCount)+" times and is in the dead-letter queue",
		s.dlq.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Maximum")}),
		0, awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD)
	alarm("TableThrottleAlarm", "DynamoDB throttled reads or writes on the table or its index",
		awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
			Expression: jsii.String("r + w"),
			Label:      jsii.String("throttle events"),
			Period:     five,
			UsingMetrics: &map[string]awscloudwatch.IMetric{
				"r": s.table.Metric(jsii.String("ReadThrottleEvents"), &awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")}),
				"w": s.table.Metric(jsii.String("WriteThrottleEvents"), &awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")}),
			},
		}), 1, awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD)
	alarm("Api5xxRateAlarm", "More than 5% of API requests answered 5xx over 5 minutes",
		awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
			Expression: jsii.String("100 * errors / MAX([requests, 1])"),
			Label:      jsii.String("5xx rate (%)"),
			Period:     five,
			UsingMetrics: &map[string]awscloudwatch.IMetric{
				"errors":   s.api.MetricServerError(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")}),
				"requests": s.api.MetricCount(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")}),
			},
		}), 5, awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD)
}

func (s *builder) outputs() {
	out := func(id, description string, value *string) {
		awscdk.NewCfnOutput(s.stack, jsii.String(id), &awscdk.CfnOutputProps{Description: jsii.String(description), Value: value})
	}
	out("ApiDomainTarget", "Point "+s.p.DomainName+" here (CNAME, or an alias with the zone ID of ApiDomainTargetZoneId) when Route 53 does not hold it",
		s.domain.RegionalDomainName())
	out("ApiDomainTargetZoneId", "The hosted zone ID of ApiDomainTarget, for an alias record", s.domain.RegionalHostedZoneId())
	out("TableName", "The DynamoDB table", s.table.TableName())
	out("MediaBucketName", "The S3 bucket of media (uploads, thumbnails, cached remote media): kept when the stack is deleted", s.media.BucketName())
	out("FederationDeadLetterQueueUrl", "Federation work that failed every try", s.dlq.QueueUrl())
	out("RegistrationSharedSecretArn", "The registration shared secret in Secrets Manager", s.sharedSecret.SecretArn())
	out("AlarmTopicArn", "The SNS topic alarms go to", s.alarmTopic.TopicArn())
	out("FirstAdminCommand", "Creates the first admin user (AWS credentials that may read the secret)",
		awscdk.Fn_Join(jsii.String(""), &[]*string{
			jsii.String("cirrus register -secret-arn "), s.sharedSecret.SecretArn(),
			jsii.String(" -admin -u admin https://" + s.p.DomainName),
		}))
	s.syncTierOutputs(out)
}
