package ingress

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Routes: where a connection went (Metrics.Routed).
const (
	RouteTunnel = "tunnel" // relayed down a gateway's tunnel
	RouteServer = "caddy"  // handed to the local TLS and HTTP server
	RouteClosed = "closed" // closed without being served (after an alert when it was TLS)
	RouteKite   = "kite"   // a PageKite kite's plain-text request, served by the PageKite frontend
)

// Reasons: why a connection was not relayed down a tunnel
// (Metrics.Refused). Those marked "server" go on to the local server, the
// others are closed.
const (
	ReasonNoSession      = "no_session"      // server (or closed with NoOfflinePage): a gateway's NAME.ZONE without a live tunnel
	ReasonBelowOffline   = "below_offline"   // closed: a name below a gateway without a live tunnel, which no certificate of the cloud covers
	ReasonNoSNI          = "no_sni"          // closed (server with NoSNIToServer): a ClientHello without a server name
	ReasonOpenFailed     = "open_failed"     // closed: the agent refused the stream or did not answer in time
	ReasonGatewayLimit   = "gateway_limit"   // closed: the gateway has MaxStreamsPerGateway ingress streams
	ReasonClientLimit    = "client_limit"    // closed: the client's prefix has MaxStreamsPerClient streams to the gateway
	ReasonTooLarge       = "too_large"       // closed: a ClientHello over MaxHelloBytes, whose name cannot be read
	ReasonNotTLS         = "not_tls"         // server: plain HTTP or another protocol
	ReasonMalformed      = "malformed"       // server: not a valid ClientHello (the local TLS stack refuses it too)
	ReasonTimeout        = "timeout"         // closed: no complete ClientHello within PeekTimeout
	ReasonClientGone     = "client_gone"     // closed: the client hung up or failed before its ClientHello ended
	ReasonListenerClosed = "listener_closed" // closed: meant for the server, but it stopped accepting
)

var (
	allRoutes  = []string{RouteTunnel, RouteServer, RouteClosed, RouteKite}
	allReasons = []string{ReasonNoSession, ReasonBelowOffline, ReasonNoSNI, ReasonOpenFailed, ReasonGatewayLimit,
		ReasonClientLimit, ReasonTooLarge, ReasonNotTLS, ReasonMalformed, ReasonTimeout, ReasonClientGone, ReasonListenerClosed}
)

// Metrics receives the router's counters. Implementations must be safe
// for concurrent use and cheap: they are called per connection and per
// relayed chunk.
type Metrics interface {
	// Routed counts a connection by where it went (a Route constant).
	Routed(route string)
	// Refused counts a connection that was not relayed (a Reason constant).
	Refused(reason string)
	// StreamOpened counts a stream the gateway accepted.
	StreamOpened()
	// ActiveRelays moves the gauge of relays in progress by delta.
	ActiveRelays(delta int)
	// Relayed counts bytes copied toward the gateway and toward the client.
	Relayed(toGateway, toClient int)
}

type nopMetrics struct{}

func (nopMetrics) Routed(string)    {}
func (nopMetrics) Refused(string)   {}
func (nopMetrics) StreamOpened()    {}
func (nopMetrics) ActiveRelays(int) {}
func (nopMetrics) Relayed(int, int) {}

// Prometheus is Metrics as Prometheus collectors, named
// gatehouse_ingress_*. Register Collectors in a registry.
type Prometheus struct {
	Connections *prometheus.CounterVec
	RefusedVec  *prometheus.CounterVec
	Opened      prometheus.Counter
	Bytes       *prometheus.CounterVec
	ToGateway   prometheus.Counter
	ToClient    prometheus.Counter
	Active      prometheus.Gauge

	// The counters of each known label value, looked up once: every new
	// connection counts its route, and WithLabelValues hashes the value
	// and takes the vector's lock each time.
	routes  map[string]prometheus.Counter
	reasons map[string]prometheus.Counter
}

// NewPrometheus returns a fresh set of collectors, every label value
// present from the start so that rates and alerts do not wait for the
// first event.
func NewPrometheus() *Prometheus {
	const ns, sub = "gatehouse", "ingress"
	m := &Prometheus{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_total",
			Help: "Connections accepted by the gatehouse listener, by where they went (tunnel, caddy, closed).",
		}, []string{"route"}),
		RefusedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Connections not relayed down a tunnel, by reason (no_session, not_tls, malformed go to Caddy; the others are closed, TLS ones after an alert).",
		}, []string{"reason"}),
		Opened: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "streams_opened_total",
			Help: "Tunnel streams opened for ingress connections.",
		}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "relayed_bytes_total",
			Help: "Bytes relayed between ingress clients and gateways, by direction (to_gateway, to_client).",
		}, []string{"direction"}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "active_relays",
			Help: "Ingress connections being relayed down a tunnel now.",
		}),
	}
	m.ToGateway = m.Bytes.WithLabelValues("to_gateway")
	m.ToClient = m.Bytes.WithLabelValues("to_client")
	m.routes = make(map[string]prometheus.Counter, len(allRoutes))
	for _, r := range allRoutes {
		m.routes[r] = m.Connections.WithLabelValues(r)
	}
	m.reasons = make(map[string]prometheus.Counter, len(allReasons))
	for _, r := range allReasons {
		m.reasons[r] = m.RefusedVec.WithLabelValues(r)
	}
	return m
}

// Collectors lists the collectors to register.
func (m *Prometheus) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Connections, m.RefusedVec, m.Opened, m.Bytes, m.Active}
}

// Routed implements Metrics.
func (m *Prometheus) Routed(route string) {
	if c, ok := m.routes[route]; ok {
		c.Inc()
		return
	}
	m.Connections.WithLabelValues(route).Inc()
}

// Refused implements Metrics.
func (m *Prometheus) Refused(reason string) {
	if c, ok := m.reasons[reason]; ok {
		c.Inc()
		return
	}
	m.RefusedVec.WithLabelValues(reason).Inc()
}

// StreamOpened implements Metrics.
func (m *Prometheus) StreamOpened() { m.Opened.Inc() }

// ActiveRelays implements Metrics.
func (m *Prometheus) ActiveRelays(delta int) { m.Active.Add(float64(delta)) }

// Relayed implements Metrics.
func (m *Prometheus) Relayed(toGateway, toClient int) {
	if toGateway > 0 {
		m.ToGateway.Add(float64(toGateway))
	}
	if toClient > 0 {
		m.ToClient.Add(float64(toClient))
	}
}
