package accounts_test

import (
	"testing"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestCost_PasswordChecks pins what docs/storage.md says password checks
// and shared-secret registration cost, with the default rate limits on.
func TestCost_PasswordChecks(t *testing.T) {
	st := servertest.Start(t)
	const pw = "correct horse battery staple" // servertest's
	u := st.Register(t, "kim")
	// UpdateItem (requests of the address), BatchGetItem (its failures),
	// the nonce's conditional DeleteItem, TransactWriteItems (account and
	// its index entry, profile, device, token, and the user directory's
	// item and word "kim": shared/userdir).
	st.CheckCost(t, "shared-secret registration", "POST /_synapse/admin/v1/register", servertest.Want(4, 1, 16))
	st.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
	st.CheckCost(t, "shared-secret nonce", "GET /_synapse/admin/v1/register", servertest.Want(3, 1, 2))
	// UpdateItem (checks of the address), BatchGetItem (the two failure
	// counters), GetItem (account), TransactWriteItems (token, device).
	st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBody("kim", pw))
	st.CheckCost(t, "login", "POST /_matrix/client/v3/login", servertest.Want(4, 3, 5))
	// A failure writes the two failure counters instead of a session.
	st.Do(t, "POST", "/_matrix/client/v3/login", "", loginBody("kim", "wrong"))
	st.CheckCost(t, "failed login", "POST /_matrix/client/v3/login", servertest.Want(5, 3, 3))
	// The auth read, the password check as at login, the Query of devices.
	st.Do(t, "POST", "/_matrix/client/v3/delete_devices", u.AccessToken, uiaBody("kim", pw, map[string]any{"devices": []string{}}))
	st.CheckCost(t, "delete_devices with a password", "POST /_matrix/client/v3/delete_devices", servertest.Want(5, 5, 1))
}
