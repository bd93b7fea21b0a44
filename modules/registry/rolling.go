package registry

import (
	"context"
	"fmt"
	"time"
)

// RollingChallenges is how many ACME challenge values RollChallenge keeps
// at one name: two, as acme-dns does, so that NAME and *.NAME, which share
// _acme-challenge.NAME, can be validated in one order.
const RollingChallenges = 2

// ChallengeOwner is the owner, relative to a gateway's name, of its ACME
// DNS-01 challenge.
const ChallengeOwner = "_acme-challenge"

// RollChallenge adds value to the TXT records at _acme-challenge of the
// subtree and drops the older ones beyond the newest RollingChallenges,
// the rolling update acme-dns clients expect: they never delete.
//
// It appends first and trims after, rather than reading and replacing in
// one write, so that concurrent updates converge without a store method of
// their own: each trim only removes values older than the two newest it
// saw, and a value is only ever added as the newest, so whatever the
// interleaving the newest two remain. A value already present keeps its
// place (the store does not duplicate it).
func (r *Registry) RollChallenge(ctx context.Context, s Subtree, value string) error {
	if err := r.prepare(s, []Record{{Owner: ChallengeOwner, Type: "TXT", Value: value}}); err != nil {
		return err
	}
	rec := Record{Subtree: s, Owner: ChallengeOwner, Type: "TXT", Value: value, TTL: 60 * time.Second, Created: r.now().UTC()}
	if err := r.store.AppendRecords(ctx, s, []Record{rec}, r.checkSubtree); err != nil {
		return fmt.Errorf("adding the challenge: %w", err)
	}
	all, err := r.store.Records(ctx, s)
	if err != nil {
		return err
	}
	var values []string
	for _, rec := range all { // oldest first
		if rec.Owner == ChallengeOwner && rec.Type == "TXT" {
			values = append(values, rec.Value)
		}
	}
	if extra := len(values) - RollingChallenges; extra > 0 {
		owner := ChallengeOwner
		filters := make([]RecordFilter, 0, extra)
		for _, v := range values[:extra] {
			filters = append(filters, RecordFilter{Owner: &owner, Type: "TXT", Value: v})
		}
		if _, err := r.store.DeleteRecords(ctx, s, filters); err != nil {
			return fmt.Errorf("dropping older challenges: %w", err)
		}
	}
	return r.emitRecords(ctx, s)
}
