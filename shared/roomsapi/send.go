package roomsapi

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/rooms"
)

// sendEvent serves PUT send/{eventType}/{txnId} and, with state set,
// PUT state/{eventType}/{stateKey}.
func (a *API) sendEvent(state bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := roomID(r)
		if err != nil {
			return err
		}
		evType, err := keyPart(r, "eventType")
		if err != nil {
			return err
		}
		who := rooms.Sent{Sender: caller(r).UserID, Device: caller(r).DeviceID}
		var key *string
		if state {
			k, err := keyPart(r, "stateKey")
			if err != nil {
				return err
			}
			key = &k
		} else if who.TxnID, err = keyPart(r, "txnId"); err != nil {
			return err
		}
		c, err := content(r)
		if err != nil {
			return err
		}
		evID, err := a.Rooms.Send(r.Context(), who, id, evType, key, c)
		return reply(w, map[string]string{"event_id": evID}, err)
	}
}

func (a *API) handleRedact(w http.ResponseWriter, r *http.Request) error {
	id, target, err := roomAndEvent(r)
	if err != nil {
		return err
	}
	txnID, err := keyPart(r, "txnId")
	if err != nil {
		return err
	}
	var body reasonBody
	if err := optionalBody(r, &body); err != nil {
		return err
	}
	who := rooms.Sent{Sender: caller(r).UserID, Device: caller(r).DeviceID, TxnID: txnID}
	evID, err := a.Rooms.Redact(r.Context(), who, id, target, body.Reason)
	return reply(w, map[string]string{"event_id": evID}, err)
}
