package accounts

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
)

// Limits are the rate limits on logging in and registering, counted per
// client address and per account as Synapse's rc_login and rc_registration
// are.
type Limits struct {
	LoginAddress, LoginAccount, RegisterAddress ratelimit.Limit
}

// PerMinute makes Limits of attempts per minute; 0 turns a limit off.
func PerMinute(loginAddress, loginAccount, registerAddress int64) Limits {
	return Limits{
		LoginAddress:    ratelimit.Limit{Name: "login.address", Burst: loginAddress, Window: time.Minute},
		LoginAccount:    ratelimit.Limit{Name: "login.account", Burst: loginAccount, Window: time.Minute},
		RegisterAddress: ratelimit.Limit{Name: "register.address", Burst: registerAddress, Window: time.Minute},
	}
}

// allow counts a request under l; with no limiter or a limit of 0, all pass.
func (s *Service) allow(r *http.Request, l ratelimit.Limit, key string) error {
	if s.Limiter == nil || l.Burst == 0 {
		return nil
	}
	return s.Limiter.Allow(r.Context(), l, key)
}

// clientAddress is the caller's IP: API Gateway's source IP in Lambda, the
// peer locally.
func clientAddress(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return strings.Trim(r.RemoteAddr, "[]")
}
