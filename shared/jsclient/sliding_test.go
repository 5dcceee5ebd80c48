package jsclient_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/servertest"
)

// TestEncryptedRoomOverSlidingSync: matrix-js-sdk's Rust crypto with the
// SDK's SlidingSync class as the only sync (MSC4186, the unstable path
// org.matrix.simplified_msc3575): two users in an encrypted room, a
// message each way decrypts, the room keys carried by the to_device
// extension and the device lists and key counts by the e2ee one
// (scripts/jsclient/sliding_e2ee.mjs).
func TestEncryptedRoomOverSlidingSync(t *testing.T) {
	st := servertest.Start(t)
	if r := st.Do(t, "GET", "/_matrix/client/versions", "", nil); !strings.Contains(string(r.Raw), `"org.matrix.simplified_msc3575":true`) {
		t.Skip("the server does not serve simplified sliding sync yet (no org.matrix.simplified_msc3575 in /versions)")
	}
	runScenario(t, "sliding_e2ee.mjs", 60*time.Second)
}
