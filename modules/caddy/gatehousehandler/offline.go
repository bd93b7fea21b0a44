package gatehousehandler

import (
	"bytes"
	"context"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-project/gatehouse/modules/caddy/gatehouseapp"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Handler modes (the `mode` field).
const (
	// ModeAPI serves the registration API and the tunnel endpoint (the
	// default).
	ModeAPI = "api"
	// ModeOffline answers for gateway names that reach Caddy itself, that
	// is names whose connection the listener wrapper did not relay down a
	// tunnel: a page saying the gateway is offline (503) or unknown (404),
	// over the cloud's wildcard certificate rather than a bare TLS alert.
	ModeOffline = "offline"
)

// offlineRetryAfter is the Retry-After of the offline page: about the time
// an agent takes to reconnect after a blip.
const offlineRetryAfter = 30 * time.Second

// lookupTimeout bounds the registry lookup behind the page; past it the
// page is served without the last-seen time.
const lookupTimeout = 3 * time.Second

// offlinePage serves ModeOffline.
type offlinePage struct {
	app    *gatehouseapp.App
	logger *zap.Logger
}

// offlineData fills offlineTemplate.
type offlineData struct {
	Host       string // NAME.ZONE as asked
	Name       string // the gateway's name, empty for an unknown host
	Known      bool   // the name is registered
	Live       bool   // a tunnel session is up, yet the listener fell back
	LastSeen   string // the last ping, UTC; empty when unknown
	Ago        string // how long ago, rounded
	Expired    bool
	RetryAfter int
}

var offlineTemplate = template.Must(template.New("offline").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
{{- if .Known}}
<meta http-equiv="refresh" content="{{.RetryAfter}}">
{{- end}}
<title>{{if .Known}}{{.Host}} is offline{{else}}No such gateway{{end}}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 36em; margin: 4em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; }
.note { color: #555; }
</style>
</head>
<body>
{{- if .Known}}
<h1>This gateway is offline</h1>
<p>The gateway <strong>{{.Name}}</strong> ({{.Host}}) is not reachable through its tunnel right now.</p>
{{- if .Live}}
<p>Its tunnel is up, but it did not accept this connection: the web server behind it may be down or busy.</p>
{{- end}}
{{- if .LastSeen}}
<p>Last seen: <time datetime="{{.LastSeen}}">{{.LastSeen}}</time> ({{.Ago}} ago).</p>
{{- else}}
<p>It has not reported to the cloud yet.</p>
{{- end}}
{{- if .Expired}}
<p>It has been silent for so long that its name no longer resolves until it reports again.</p>
{{- end}}
<p class="note">If it is yours, check that it is powered on and connected to the internet. This page retries by itself in {{.RetryAfter}} seconds.</p>
{{- else}}
<h1>No such gateway</h1>
<p>There is no gateway named <strong>{{.Host}}</strong>.</p>
{{- end}}
</body>
</html>
`))

func (p *offlinePage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := offlineData{Host: strings.ToLower(hostOnly(r.Host)), RetryAfter: int(offlineRetryAfter / time.Second)}
	status := http.StatusNotFound
	if name, ok := p.app.GatewayName(r.Host); ok {
		d.Name = name
		ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
		g, err := p.app.Registry().Gateway(ctx, name)
		cancel()
		switch {
		case errors.Is(err, registry.ErrNotFound):
		case err != nil:
			// The registry is unavailable: the name may well exist, and
			// "offline" without a date is the safer thing to say.
			p.logger.Warn("offline page: registry lookup failed", zap.String("gateway", name), zap.Error(err))
			d.Known = true
		default:
			d.Known = true
			d.Expired = g.Expired
			if !g.LastPing.IsZero() {
				d.LastSeen = g.LastPing.UTC().Format(time.RFC3339)
				d.Ago = time.Since(g.LastPing).Round(time.Second).String()
			}
		}
		if d.Known {
			status = http.StatusServiceUnavailable
			_, d.Live = p.app.Tunnels().Lookup(name)
		}
	}
	var body bytes.Buffer
	if err := offlineTemplate.Execute(&body, d); err != nil {
		p.logger.Error("offline page", zap.Error(err))
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(body.Len()))
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", strconv.Itoa(d.RetryAfter))
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body.Bytes())
	}
}

// hostOnly strips the port from an HTTP Host.
func hostOnly(host string) string {
	for i := len(host) - 1; i >= 0; i-- {
		switch host[i] {
		case ':':
			return host[:i]
		case ']', '.':
			return host
		}
	}
	return host
}
