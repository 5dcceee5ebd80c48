package accounts

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Routes mounts the accounts, sessions and devices API on the client tree.
// registrationOpen is enable_registration; sharedSecret is
// registration_shared_secret (empty disables the admin registration API).
func (s *Service) Routes(rt *httpapi.Router, registrationOpen, requireToken bool, sharedSecret string) {
	auth := s.RequireAuth
	reg := &Registration{Accounts: s, Open: registrationOpen, RequireToken: requireToken}
	shared := &SharedSecret{Accounts: s, Secret: sharedSecret}
	const v3 = "/_matrix/client/v3"

	h := httpapi.Handle
	admin := func(f func(http.ResponseWriter, *http.Request) error) http.HandlerFunc { return s.RequireAdmin(h(f)) }

	rt.HandleFunc("GET "+v3+"/login", h(s.handleLoginFlows))
	rt.HandleFunc("POST "+v3+"/login", h(s.handleLogin))
	rt.HandleFunc("POST "+v3+"/refresh", h(s.handleRefresh))
	rt.HandleFunc("POST "+v3+"/logout", auth(h(s.handleLogout)))
	rt.HandleFunc("POST "+v3+"/logout/all", auth(h(s.handleLogoutAll)))
	rt.HandleFunc("POST "+v3+"/register", h(reg.handleRegister))
	rt.HandleFunc("GET "+v3+"/register/available", h(reg.handleAvailable))
	rt.HandleFunc("GET /_matrix/client/v1/register/m.login.registration_token/validity", h(reg.handleTokenValidity))
	rt.HandleFunc("GET "+v3+"/account/whoami", auth(h(s.handleWhoami)))
	rt.HandleFunc("POST "+v3+"/account/password", s.handlePassword)
	rt.HandleFunc("POST "+v3+"/account/deactivate", auth(h(s.handleDeactivate)))
	rt.HandleFunc("GET "+v3+"/devices", auth(h(s.handleListDevices)))
	rt.HandleFunc("GET "+v3+"/devices/{deviceId}", auth(h(s.handleGetDevice)))
	rt.HandleFunc("PUT "+v3+"/devices/{deviceId}", auth(h(s.handleUpdateDevice)))
	rt.HandleFunc("DELETE "+v3+"/devices/{deviceId}", auth(h(s.handleDeleteDevice)))
	rt.HandleFunc("POST "+v3+"/delete_devices", auth(h(s.handleDeleteDevices)))
	rt.HandleFunc("GET /_synapse/admin/v2/users", admin(s.handleAdminListUsers))
	rt.HandleFunc("GET /_synapse/admin/v2/users/{userId}", admin(s.handleAdminGetUser))
	rt.HandleFunc("PUT /_synapse/admin/v2/users/{userId}", admin(s.handleAdminPutUser))
	rt.HandleFunc("POST /_synapse/admin/v1/reset_password/{userId}", admin(s.handleAdminResetPassword))
	rt.HandleFunc("POST /_synapse/admin/v1/deactivate/{userId}", admin(s.handleAdminDeactivate))
	rt.HandleFunc("GET /_synapse/admin/v1/registration_tokens", admin(s.handleAdminListTokens))
	rt.HandleFunc("POST /_synapse/admin/v1/registration_tokens/new", admin(s.handleAdminNewToken))
	rt.HandleFunc("GET /_synapse/admin/v1/registration_tokens/{token}", admin(s.handleAdminGetToken))
	rt.HandleFunc("PUT /_synapse/admin/v1/registration_tokens/{token}", admin(s.handleAdminUpdateToken))
	rt.HandleFunc("DELETE /_synapse/admin/v1/registration_tokens/{token}", admin(s.handleAdminDeleteToken))
	rt.HandleFunc("GET /_synapse/admin/v1/register", h(shared.handleNonce))
	rt.HandleFunc("POST /_synapse/admin/v1/register", h(shared.handleRegister))
}
