package agent

import "context"

// manageCertificates has the certificates of the names in the state
// obtained (or loaded) and renewed: the current name's, which is also
// served to clients that ask for no known name, and a pending name's.
func (a *Agent) manageCertificates(ctx context.Context) error {
	a.mu.Lock()
	cur, pend := a.st.Current, a.st.Pending
	a.mu.Unlock()
	if cur.Valid() {
		a.certs.SetFallback(cur.FQDN)
		if err := a.certs.Manage(ctx, cur.FQDN, cur.Token); err != nil {
			return err
		}
	}
	if pend.Valid() {
		if err := a.certs.Manage(ctx, pend.FQDN, pend.Token); err != nil {
			return err
		}
	}
	return nil
}
