package dnszone

import (
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// PutAddresses updates the mode and addresses of g and keeps the records
// the index already holds for it. It serves the steady stream of pings,
// which change addresses at most, without reading records from the store.
// A gateway the index does not hold is added without records: callers
// bringing one back from expiry use Put.
func (x *Index) PutAddresses(g *registry.Gateway) {
	if g == nil {
		return
	}
	name, ok := gatewayLabel(g.Name)
	if !ok {
		return
	}
	if g.Expired || g.Disabled {
		x.Remove(name)
		return
	}
	x.store(name, makeEntry(g, nil), true)
}

// Names returns the names of every gateway indexed.
func (x *Index) Names() []string {
	var names []string
	x.forEach(func(name string, _ entry) bool {
		names = append(names, name)
		return true
	})
	return names
}

// Has reports whether the named gateway is indexed.
func (x *Index) Has(name string) bool {
	name, ok := gatewayLabel(name)
	if !ok {
		return false
	}
	_, ok = x.get(name)
	return ok
}
