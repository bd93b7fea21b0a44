package node

import (
	"context"
	"fmt"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// The zone's own records (the operator's ACME challenges at
// _acme-challenge.ZONE) take a path of their own until records are keyed
// by owner; everything about them is in this file so that it can go in
// one piece.

// loadZoneRecords puts the zone's own records in the DNS index, at start
// and after missed changes.
func (n *Node) loadZoneRecords(ctx context.Context) error {
	recs, err := n.reg.ZoneRecords(ctx)
	if err != nil {
		return fmt.Errorf("gatehouse: loading the zone's own records: %w", err)
	}
	n.index.PutZone(recs)
	if len(recs) > 0 {
		n.logger.Info("zone records loaded", "records", len(recs))
	}
	return nil
}

// applyZone applies an event about the zone's own records (no gateway,
// no tunnel) and reports whether ev was one.
func (n *Node) applyZone(ev registry.Event) bool {
	if !ev.Zone {
		return false
	}
	if n.index != nil {
		n.index.PutZone(ev.Records)
	}
	return true
}
