package gatehouselistener

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse-project/gatehouse/modules/ingress"
)

// defaultMetrics are the listener's Prometheus collectors. There is one
// set per process rather than per config: relays outlive the listener that
// started them across reloads, and their bytes must keep being counted;
// each config's registry registers the same collectors.
var defaultMetrics = ingress.NewPrometheus()

// registerMetrics adds the process's collectors to a config's registry;
// the second listener wrapper of a config finds them registered already.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	for _, c := range defaultMetrics.Collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
