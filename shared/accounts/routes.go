package accounts

import "github.com/cirrus-matrix/cirrus/shared/httpapi"

// Routes mounts the accounts, sessions and devices API on the client tree.
// registrationOpen is enable_registration; sharedSecret is
// registration_shared_secret (empty disables the admin registration API).
func (s *Service) Routes(rt *httpapi.Router, registrationOpen, requireToken bool, sharedSecret string) {
	auth := s.RequireAuth
	reg := &Registration{Accounts: s, Open: registrationOpen, RequireToken: requireToken}
	shared := &SharedSecret{Accounts: s, Secret: sharedSecret}
	const v3 = "/_matrix/client/v3"

	rt.HandleFunc("GET "+v3+"/login", s.LoginFlows)
	rt.HandleFunc("POST "+v3+"/login", s.Login)
	rt.HandleFunc("POST "+v3+"/refresh", s.RefreshHandler)
	rt.HandleFunc("POST "+v3+"/logout", auth(s.Logout))
	rt.HandleFunc("POST "+v3+"/logout/all", auth(s.LogoutAll))
	rt.HandleFunc("POST "+v3+"/register", reg.Register)
	rt.HandleFunc("GET "+v3+"/register/available", reg.Available)
	rt.HandleFunc("GET /_matrix/client/v1/register/m.login.registration_token/validity", reg.TokenValidity)
	rt.HandleFunc("GET "+v3+"/account/whoami", auth(s.Whoami))
	rt.HandleFunc("POST "+v3+"/account/password", auth(s.ChangePassword))
	rt.HandleFunc("POST "+v3+"/account/deactivate", auth(s.Deactivate))
	rt.HandleFunc("GET "+v3+"/devices", auth(s.ListDevices))
	rt.HandleFunc("GET "+v3+"/devices/{deviceId}", auth(s.GetDevice))
	rt.HandleFunc("PUT "+v3+"/devices/{deviceId}", auth(s.UpdateDevice))
	rt.HandleFunc("DELETE "+v3+"/devices/{deviceId}", auth(s.DeleteDevice))
	rt.HandleFunc("POST "+v3+"/delete_devices", auth(s.DeleteDevices))
	rt.HandleFunc("GET /_synapse/admin/v2/users", s.RequireAdmin(s.AdminListUsers))
	rt.HandleFunc("GET /_synapse/admin/v2/users/{userId}", s.RequireAdmin(s.AdminGetUser))
	rt.HandleFunc("PUT /_synapse/admin/v2/users/{userId}", s.RequireAdmin(s.AdminPutUser))
	rt.HandleFunc("POST /_synapse/admin/v1/reset_password/{userId}", s.RequireAdmin(s.AdminResetPassword))
	rt.HandleFunc("POST /_synapse/admin/v1/deactivate/{userId}", s.RequireAdmin(s.AdminDeactivate))
	rt.HandleFunc("GET /_synapse/admin/v1/registration_tokens", s.RequireAdmin(s.AdminListTokens))
	rt.HandleFunc("POST /_synapse/admin/v1/registration_tokens/new", s.RequireAdmin(s.AdminNewToken))
	rt.HandleFunc("GET /_synapse/admin/v1/registration_tokens/{token}", s.RequireAdmin(s.AdminGetToken))
	rt.HandleFunc("PUT /_synapse/admin/v1/registration_tokens/{token}", s.RequireAdmin(s.AdminUpdateToken))
	rt.HandleFunc("DELETE /_synapse/admin/v1/registration_tokens/{token}", s.RequireAdmin(s.AdminDeleteToken))
	rt.HandleFunc("GET /_synapse/admin/v1/register", shared.Nonce)
	rt.HandleFunc("POST /_synapse/admin/v1/register", shared.Register)
}
