package tunnel

import (
	"errors"
	"io"
	"net/http"
)

// OfferUpgrades adds the raw transport, and the sealed one when sealed, to
// an upgrade request's Upgrade header, after the WebSocket's token: Go's
// HTTP transport still sees a WebSocket upgrade (which it keeps on
// HTTP/1.1), and a peer that knows neither picks websocket from the list.
// The agent's client and the cluster's link offer them this way.
func OfferUpgrades(h http.Header, sealed bool) {
	h.Add("Upgrade", RawUpgrade)
	if sealed {
		h.Add("Upgrade", SealedUpgrade)
	}
}

// Upgraded is an upgraded connection to the raw or the sealed transport:
// rwc is the response's body (the TLS connection, for the raw one), and
// Sealed holds the sealed transport's keys, nil on the raw one.
type Upgraded struct {
	RWC    io.ReadWriteCloser
	Sealed *SealedKeys
}

// TakeUpgrade reads the answer to a request made with OfferUpgrades. ok is
// false for any other answer (an error status, a WebSocket's 101), which
// the caller hands on as it is. For the sealed transport it derives the
// keys from the response's TLS connection and checks the peer's binding
// (ErrSealedBinding: the two ends do not share that TLS connection); a
// failure closes the response.
func TakeUpgrade(resp *http.Response, sealedOffered bool) (up Upgraded, ok bool, err error) {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return up, false, nil
	}
	switch {
	case sealedOffered && HeaderHasToken(resp.Header, "Upgrade", SealedUpgrade):
		keys, err := DeriveSealedKeys(resp.TLS)
		if err == nil {
			err = keys.CheckBinding(resp.Header.Get(SealedBindingHeader))
		}
		if err != nil {
			_ = resp.Body.Close()
			return up, true, err
		}
		up.Sealed = &keys
	case HeaderHasToken(resp.Header, "Upgrade", RawUpgrade):
	default:
		return up, false, nil
	}
	rwc, isRWC := resp.Body.(io.ReadWriteCloser)
	if !isRWC {
		_ = resp.Body.Close()
		return Upgraded{}, true, errors.New("raw upgrade: the response body is not writable")
	}
	up.RWC = rwc
	return up, true, nil
}
