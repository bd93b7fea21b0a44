package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/netinfo"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// register makes sure the agent holds a name: the one in the state, or a
// new provisional one derived from the MAC address. It retries until the
// cloud answers or ctx ends.
func (a *Agent) register(ctx context.Context) error {
	a.mu.Lock()
	have := a.st.Current.Valid() || a.st.Pending.Valid()
	a.mu.Unlock()
	if have {
		a.log.Info("using the registration in the state directory", "name", a.currentName())
		return nil
	}
	mac := a.cfg.MAC
	if mac == "" {
		var err error
		if mac, err = netinfo.MAC(); err != nil {
			return fmt.Errorf("deriving the provisional name: %w", err)
		}
	}
	delay := time.Second
	for {
		reg, err := a.subscribeProvisional(ctx, mac)
		if err == nil {
			a.mu.Lock()
			a.st.Current = reg
			a.regErr = nil
			err = a.store.Save(a.st)
			a.mu.Unlock()
			if err != nil {
				return err
			}
			a.log.Info("registered provisional name", "name", reg.Name, "fqdn", reg.FQDN)
			return nil
		}
		a.mu.Lock()
		a.regErr = err
		a.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("registration failed", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Minute)
	}
}

// subscribeProvisional subscribes by MAC; when that name is taken (the
// gateway lost its state), it adds a random suffix.
func (a *Agent) subscribeProvisional(ctx context.Context, mac string) (*state.Registration, error) {
	sub, err := a.api.Subscribe(ctx, cloudapi.SubscribeRequest{MAC: mac, Mode: a.cfg.Mode})
	if errors.Is(err, cloudapi.ErrNameUnavailable) {
		base, merr := registry.NameFromMAC(mac)
		if merr != nil {
			return nil, err
		}
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		name := base + "-" + hex.EncodeToString(b)
		a.log.Warn("provisional name taken (state lost?): using a suffixed one", "name", name)
		sub, err = a.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: name, Mode: a.cfg.Mode})
	}
	if err != nil {
		return nil, err
	}
	return &state.Registration{Name: sub.Name, Token: sub.Token, FQDN: sub.FQDN, Zone: sub.Zone, Mode: a.cfg.Mode, Provisional: true}, nil
}

func (a *Agent) currentName() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Current != nil {
		return a.st.Current.Name
	}
	return ""
}

// reconcile moves the agent toward where it should be: switch to a pending
// name whose certificate is there, run the tunnel for the current name once
// its certificate is there, give retired names up.
func (a *Agent) reconcile(ctx context.Context) {
	a.mu.Lock()
	cur, pend := a.st.Current.Clone(), a.st.Pending.Clone()
	a.mu.Unlock()
	if pend.Valid() && (a.cfg.Passthrough || a.certs.Status(pend.FQDN).Ready) {
		a.switchTo(ctx, pend)
		cur = pend
	}
	if a.cfg.Mode == registry.ModeTunnel && cur.Valid() && (a.cfg.Passthrough || a.certs.Status(cur.FQDN).Ready) {
		a.ensureTunnel(cur)
	}
	a.retire(ctx)
}

// switchTo makes pend the current name.
func (a *Agent) switchTo(ctx context.Context, pend *state.Registration) {
	a.mu.Lock()
	old := a.st.Current
	a.st.Current, a.st.Pending = pend, nil
	if old.Valid() && old.Name != pend.Name {
		a.holdRetired(*old)
	}
	a.retryRet = time.Time{}
	err := a.store.Save(a.st)
	a.mu.Unlock()
	if err != nil {
		a.log.Error("saving state", "error", err)
	}
	a.log.Info("switched name", "from", nameOf(old), "to", pend.Name)
	a.certs.SetFallback(pend.FQDN)
	if old.Valid() && old.FQDN != pend.FQDN {
		a.certs.Unmanage(old.FQDN)
	}
	a.stopTunnel()
	a.triggerPing()
}

func nameOf(r *state.Registration) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// holdRetired keeps r, replaced by another name, registered for the rename
// grace period: a rename made by mistake (or by someone who got hold of
// the setup code) does not lose the name, and the owner can switch back.
// The caller holds a.mu.
func (a *Agent) holdRetired(r state.Registration) {
	r.RetireAfter = a.now().Add(time.Duration(a.cfg.RenameGrace))
	a.st.Retired = append(a.st.Retired, r)
	a.retryRet = time.Time{}
	if a.cfg.RenameGrace > 0 {
		a.log.Info("old name kept reserved to this gateway", "name", r.Name, "until", r.RetireAfter.Format(time.RFC3339))
	}
}

// takeRetired removes the retired registration of name, still within its
// grace period, and returns it; nil when there is none. A name past its
// period is retire's to give up: the two never race for one name.
// The caller holds a.mu.
func (a *Agent) takeRetired(name string) *state.Registration {
	now := a.now()
	for i, r := range a.st.Retired {
		if r.Name == name && now.Before(r.RetireAfter) {
			a.st.Retired = append(a.st.Retired[:i:i], a.st.Retired[i+1:]...)
			r.RetireAfter = time.Time{}
			return &r
		}
	}
	return nil
}

// retire unsubscribes the retired names whose grace period is over,
// retrying later on failure.
func (a *Agent) retire(ctx context.Context) {
	now := a.now()
	a.mu.Lock()
	var due []state.Registration
	if !now.Before(a.retryRet) {
		for _, r := range a.st.Retired {
			if !now.Before(r.RetireAfter) {
				due = append(due, r)
			}
		}
	}
	a.mu.Unlock()
	if len(due) == 0 {
		return
	}
	gone := map[string]bool{} // by token
	failed := false
	for _, r := range due {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := a.api.Unsubscribe(cctx, r.Token)
		cancel()
		switch {
		case err == nil:
			a.log.Info("gave the old name up", "name", r.Name)
			gone[r.Token] = true
		case errors.Is(err, cloudapi.ErrTokenRefused):
			// Already gone (expired, reclaimed): nothing left to do.
			gone[r.Token] = true
		default:
			a.log.Warn("giving the old name up failed: will retry", "name", r.Name, "error", err)
			failed = true
		}
	}
	a.mu.Lock()
	// By token, not by position: the owner may have switched back to a
	// retired name meanwhile, and names may have been retired meanwhile.
	keep := a.st.Retired[:0:0]
	for _, r := range a.st.Retired {
		if !gone[r.Token] {
			keep = append(keep, r)
		}
	}
	a.st.Retired = keep
	if failed {
		a.retryRet = a.now().Add(time.Minute)
	}
	err := a.store.Save(a.st)
	a.mu.Unlock()
	if err != nil {
		a.log.Error("saving state", "error", err)
	}
}
