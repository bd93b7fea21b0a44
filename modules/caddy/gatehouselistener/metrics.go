package gatehouselistener

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Routes of gatehouse_ingress_connections_total.
const (
	routeTunnel = "tunnel" // relayed down a gateway's tunnel
	routeCaddy  = "caddy"  // handed to Caddy's TLS and HTTP server
	routeClosed = "closed" // closed without being served
)

// metrics are the listener's Prometheus collectors. There is one set per
// process rather than per config: relays outlive the listener that started
// them across reloads, and their bytes must keep being counted; each
// config's registry registers the same collectors.
type metrics struct {
	connections *prometheus.CounterVec
	refused     *prometheus.CounterVec
	opened      prometheus.Counter
	bytes       *prometheus.CounterVec
	toGateway   prometheus.Counter
	toClient    prometheus.Counter
	active      prometheus.Gauge
}

var defaultMetrics = newMetrics()

func newMetrics() *metrics {
	const ns, sub = "gatehouse", "ingress"
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "connections_total",
			Help: "Connections accepted by the gatehouse listener, by where they went (tunnel, caddy, closed).",
		}, []string{"route"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Connections not relayed down a tunnel, by reason (no_session, open_failed, not_tls, malformed go to Caddy; timeout, client_gone, listener_closed are closed).",
		}, []string{"reason"}),
		opened: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "streams_opened_total",
			Help: "Tunnel streams opened for ingress connections.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "relayed_bytes_total",
			Help: "Bytes relayed between ingress clients and gateways, by direction (to_gateway, to_client).",
		}, []string{"direction"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "active_relays",
			Help: "Ingress connections being relayed down a tunnel now.",
		}),
	}
	m.toGateway = m.bytes.WithLabelValues("to_gateway")
	m.toClient = m.bytes.WithLabelValues("to_client")
	// Every label value exists from the start, so that rates and alerts
	// do not wait for the first event.
	for _, r := range []string{routeTunnel, routeCaddy, routeClosed} {
		m.connections.WithLabelValues(r)
	}
	for _, r := range []string{reasonNoSession, reasonOpenFailed, reasonNotTLS, reasonMalformed, reasonTimeout, reasonClientGone, reasonListenerClosed} {
		m.refused.WithLabelValues(r)
	}
	return m
}

// registerMetrics adds the process's collectors to a config's registry;
// the second listener wrapper of a config finds them registered already.
func registerMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := defaultMetrics
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.refused, m.opened, m.bytes, m.active} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) refuse(reason string) { m.refused.WithLabelValues(reason).Inc() }

func (m *metrics) route(route string) { m.connections.WithLabelValues(route).Inc() }
