// Package discovery serves what clients and servers ask before anything else:
// which spec versions this server speaks, where it is (.well-known), what
// software it runs, and its signing keys.
package discovery

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// Version is Cirrus's version, set at build time with -ldflags -X.
var Version = "0.1.0-dev"

// SpecVersions are the client-server spec versions advertised by
// /versions. They were held back until the accounts, rooms, sync and
// end-to-end encryption APIs were served, since a client such as Element
// relies on all of them once it logs in; modules still missing (the content
// repository, search; docs/architecture.md) answer M_UNRECOGNIZED, which
// clients handle per feature. The list is the one Synapse advertises and
// matrix-js-sdk 43 accepts (v1.1 to v1.13): v1.13 and later would have
// clients look for features not built here (OAuth 2.0 metadata, ...).
var SpecVersions = []string{"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"}

// Handlers serve the discovery endpoints.
type Handlers struct {
	Config *config.Config
	Key    keys.Key
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Versions serves GET /_matrix/client/versions.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientversions
func (h *Handlers) Versions(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          SpecVersions,
		"unstable_features": map[string]bool{"org.matrix.simplified_msc3575": true},
	})
}

// WellKnownClient serves GET /.well-known/matrix/client: where clients find
// the client-server API of this server name.
// https://spec.matrix.org/v1.19/client-server-api/#getwell-knownmatrixclient
func (h *Handlers) WellKnownClient(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"m.homeserver": map[string]string{"base_url": h.Config.PublicBaseURL},
	})
}

// WellKnownServer serves GET /.well-known/matrix/server: the delegation that
// sends other servers to the federation API (port 443 behind API Gateway).
// https://spec.matrix.org/v1.19/server-server-api/#getwell-knownmatrixserver
func (h *Handlers) WellKnownServer(w http.ResponseWriter, r *http.Request) {
	if !h.Config.ServeServerWellknown {
		httpapi.WriteError(w, r, httpapi.NotFound("this server does not delegate federation through .well-known"))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"m.server": h.Config.WellKnownServer()})
}

// rootPage is the page at /. html/template escapes every value by its
// context, so a web_client_location with markup or a javascript: scheme
// cannot put a script on the page.
var rootPage = template.Must(template.New("root").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.ServerName}}: Matrix homeserver</title>
</head>
<body>
<h1>Cirrus is running</h1>
<p>This is the Matrix homeserver <strong>{{.ServerName}}</strong>, running Cirrus {{.Version}}.
Its users have IDs such as <code>@alice:{{.ServerName}}</code>.</p>
<h2>Connect a client</h2>
<p>Use any Matrix client{{if .WebClient}}, such as the web client at <a href="{{.WebClient}}">{{.WebClient}}</a>{{end}}:
choose another homeserver and enter <code>{{.BaseURL}}</code>, then sign in with your user name and password.</p>
<p>Clients: <a href="https://matrix.org/ecosystem/clients/">matrix.org/ecosystem/clients</a>.</p>
</body>
</html>
`))

// Root serves GET /: a page for a person who opens the server's address in
// a browser, saying that the homeserver runs and how to connect a client,
// as Synapse's start page does. It is plain HTML; the Content-Security-Policy
// forbids scripts and anything loaded from elsewhere.
func (h *Handlers) Root(w http.ResponseWriter, r *http.Request) {
	var page bytes.Buffer
	err := rootPage.Execute(&page, map[string]string{
		"ServerName": h.Config.ServerName,
		"Version":    Version,
		"BaseURL":    strings.TrimSuffix(h.Config.PublicBaseURL, "/"),
		"WebClient":  h.Config.WebClientLocation,
	})
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	w.Write(page.Bytes())
}

// FederationVersion serves GET /_matrix/federation/v1/version.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1version
func (h *Handlers) FederationVersion(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"server": map[string]string{"name": "Cirrus", "version": Version},
	})
}

// ServerKeys serves GET /_matrix/key/v2/server: the signing key, signed by
// itself, with how long it may be cached.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixkeyv2server
func (h *Handlers) ServerKeys(w http.ResponseWriter, r *http.Request) {
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	doc, err := keys.ServerKeys(h.Config.ServerName, h.Key, now())
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc)
}
