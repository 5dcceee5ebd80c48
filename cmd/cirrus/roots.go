package main

// The sync tier's container image (scripts/syncimage) holds only /cirrus:
// no /etc/ssl, no CA bundle. Without roots every HTTPS call to AWS
// (Secrets Manager, SQS) would fail to verify. The fallback package embeds
// the Mozilla root set and registers it with crypto/x509.SetFallbackRoots,
// which applies only when the system has no roots of its own: on a machine
// or Lambda runtime with a CA bundle, that bundle is used as before.
import _ "golang.org/x/crypto/x509roots/fallback"
