package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/cloudapi"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/setupui"
	"github.com/gatehouse-project/gatehouse/gateway-agent/internal/state"
)

// ChooseName implements setupui.Controller: subscribe name, then obtain its
// certificate; reconcile switches once it is there.
func (a *Agent) ChooseName(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", setupui.ErrInput)
	}
	if name == a.currentName() {
		return fmt.Errorf("%w: %s is already this gateway's name", setupui.ErrInput, name)
	}
	a.mu.Lock()
	pending := a.st.Pending.Valid() && a.st.Pending.Name == name
	a.mu.Unlock()
	if pending {
		// Chosen already (a second click, or the setup command after the
		// page): the cloud would call the name taken, by this gateway.
		return nil
	}
	a.mu.Lock()
	held := a.takeRetired(name)
	a.mu.Unlock()
	if held != nil {
		// A name renamed away from within its grace period: still this
		// gateway's, so switching back needs no subscribe.
		a.log.Info("switching back to a reserved name", "name", name)
		return a.setPending(held)
	}
	sub, err := a.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: name, Mode: a.cfg.Mode})
	if err != nil {
		a.log.Info("name refused", "name", name, "error", err)
		return err
	}
	return a.setPending(a.registration(sub))
}

// registration is a new subscription as the state keeps it.
func (a *Agent) registration(sub *cloudapi.Subscription) *state.Registration {
	return &state.Registration{Name: sub.Name, Token: sub.Token, FQDN: sub.FQDN, Zone: sub.Zone, Mode: a.cfg.Mode}
}

// Reclaim implements setupui.Controller.
func (a *Agent) Reclaim(ctx context.Context, name, token string) error {
	if name == "" || token == "" {
		return fmt.Errorf("%w: the name and the reclamation token are both needed", setupui.ErrInput)
	}
	sub, err := a.api.Subscribe(ctx, cloudapi.SubscribeRequest{Name: name, ReclamationToken: token, Mode: a.cfg.Mode})
	if err != nil {
		a.log.Info("reclamation refused", "name", name, "error", err)
		return err
	}
	return a.setPending(a.registration(sub))
}

// setPending makes reg the name to switch to once its certificate is
// there.
func (a *Agent) setPending(reg *state.Registration) error {
	a.mu.Lock()
	if old := a.st.Pending; old.Valid() && old.Name != reg.Name {
		// An earlier choice that never got its certificate: held for the
		// grace period like any name the owner chose.
		a.certs.Unmanage(old.FQDN)
		a.holdRetired(*old)
	}
	a.st.Pending = reg
	err := a.store.Save(a.st)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.log.Info("name chosen: obtaining its certificate", "name", reg.Name, "fqdn", reg.FQDN)
	a.mu.Lock()
	runCtx := a.runCtx
	a.mu.Unlock()
	if err := a.certs.Manage(runCtx, reg.FQDN, reg.Token); err != nil {
		return err
	}
	a.wakeUp()
	return nil
}

// SetEmail implements setupui.Controller.
func (a *Agent) SetEmail(ctx context.Context, email string) error {
	if email == "" {
		return fmt.Errorf("%w: the email is empty", setupui.ErrInput)
	}
	a.mu.Lock()
	cur := a.st.Current.Clone()
	a.mu.Unlock()
	if !cur.Valid() {
		return errors.New("the gateway is not registered yet")
	}
	if err := a.api.SetEmail(ctx, cur.Token, email); err != nil {
		return err
	}
	a.mu.Lock()
	a.st.Email = email
	err := a.store.Save(a.st)
	a.mu.Unlock()
	return err
}

// RequestReclaim implements setupui.Controller.
func (a *Agent) RequestReclaim(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("%w: the name is empty", setupui.ErrInput)
	}
	return a.api.Reclaim(ctx, name)
}

var _ setupui.Controller = (*Agent)(nil)
