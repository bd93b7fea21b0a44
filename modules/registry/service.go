package registry

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Errors of the registration flows, beyond the store's.
var (
	// ErrReclaimable is ErrNameTaken for a name whose owner has a verified
	// email, so a reclamation can be asked for.
	ErrReclaimable     = errors.New("name taken, reclamation possible")
	ErrInvalidEmail    = errors.New("invalid email address")
	ErrInvalidInput    = errors.New("invalid input")
	ErrExpiredToken    = errors.New("token expired")
	ErrOutsideSubtree  = errors.New("record outside the gateway's subtree")
	ErrUnsupportedType = errors.New("unsupported record type")
	// ErrNoMailer: the email flows need a mail server this cloud lacks.
	ErrNoMailer = errors.New("email is not configured on this server")
)

// Notifier delivers the mails of the email flows. The registry decides when
// a mail is due; the notifier decides what it looks like.
type Notifier interface {
	SendVerification(ctx context.Context, to, name, token string) error
	SendReclamation(ctx context.Context, to, name, token string) error
}

// Event tells observers (the DNS index, the tunnel hub) what changed.
type Event struct {
	// Subtree is what changed: a gateway, or the zone's own records.
	Subtree Subtree
	// Gateway is the gateway's new state; nil when it was removed, and
	// for the zone's subtree.
	Gateway *Gateway
	// Records is the subtree's full record set when RecordsChanged.
	Records        []Record
	RecordsChanged bool
	// Revoked is set when the gateway's token stopped working (reclaimed,
	// unsubscribed) or it expired: live tunnels for the name must close.
	Revoked bool
	// Domains are the custom domains the gateway holds when
	// DomainsChanged.
	Domains        []string
	DomainsChanged bool
}

// Name is the gateway's name, "" for the zone's subtree.
func (ev Event) Name() string {
	name, _ := ev.Subtree.Gateway()
	return name
}

// Config holds the registry's policy.
type Config struct {
	// ExpireAfter is how long a silent gateway keeps its addresses; 0 never.
	ExpireAfter time.Duration
	// ReclaimTTL is how long a mailed reclamation token stays valid.
	ReclaimTTL time.Duration
	// VerifyTTL is how long an email verification link stays valid.
	VerifyTTL time.Duration
	// ChallengeLifetime is after how long a forgotten ACME challenge TXT
	// value is pruned.
	ChallengeLifetime time.Duration
	// MaxRecords bounds the records one gateway may hold.
	MaxRecords int
	// SweepInterval is how often expiry and pruning run.
	SweepInterval time.Duration
	// PingBatch is the most pings committed in one transaction.
	PingBatch int
	// PingWorkers is how many batches may commit at once (1 for SQLite's
	// single writer; more for PostgreSQL).
	PingWorkers int
	// Reserved names in addition to the built-in ones.
	Reserved []string
	// Sealer, when set, keeps every gateway's token sealed beside its hash
	// (sealed at registration, or the next time an older gateway presents
	// it), so that KiteSecret can return it. Nil: no token is kept.
	Sealer *Sealer
	// OnSealError is told when a token could not be sealed (it is tried
	// again the next time the token is presented).
	OnSealError func(name string, err error)
}

func (c *Config) setDefaults() {
	if c.ReclaimTTL == 0 {
		c.ReclaimTTL = 24 * time.Hour
	}
	if c.VerifyTTL == 0 {
		c.VerifyTTL = 72 * time.Hour
	}
	if c.ChallengeLifetime == 0 {
		c.ChallengeLifetime = 24 * time.Hour
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = 64
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Minute
		if c.ExpireAfter > 0 && c.ExpireAfter/4 < c.SweepInterval {
			c.SweepInterval = max(c.ExpireAfter/4, 100*time.Millisecond)
		}
	}
	if c.PingBatch == 0 {
		c.PingBatch = 256
	}
	if c.PingWorkers == 0 {
		c.PingWorkers = 1
	}
}

// Registry applies Gatehouse's registration rules over a Store.
type Registry struct {
	store    Store
	cfg      Config
	names    *Names
	notifier Notifier
	now      func() time.Time

	mu        sync.RWMutex
	observers []func(Event)

	// sealed maps a gateway's name to the first 8 bytes (uint64) of the
	// token hash whose seal is known to be stored, so pings skip the store.
	sealed sync.Map

	pings chan *pendingPing
	stop  chan struct{}
	wg    sync.WaitGroup
}

// New returns a Registry over store. Call Start to run the pinger and the
// sweeper, and Stop to end them.
func New(store Store, cfg Config, notifier Notifier) *Registry {
	cfg.setDefaults()
	return &Registry{
		store:    store,
		cfg:      cfg,
		names:    NewNames(cfg.Reserved),
		notifier: notifier,
		now:      time.Now,
		pings:    make(chan *pendingPing, 4096),
		stop:     make(chan struct{}),
	}
}

// Store returns the underlying store.
func (r *Registry) Store() Store { return r.store }

// Names returns the name checker.
func (r *Registry) Names() *Names { return r.names }

// Observe registers fn to be called, synchronously, after every change.
func (r *Registry) Observe(fn func(Event)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observers = append(r.observers, fn)
}

func (r *Registry) emit(ev Event) {
	r.mu.RLock()
	obs := r.observers
	r.mu.RUnlock()
	for _, fn := range obs {
		fn(ev)
	}
}

// Reload re-reads a subtree from the store and tells observers; used at
// start for the zone's records, and when another process sharing the
// store announced a change.
func (r *Registry) Reload(ctx context.Context, s Subtree) error {
	name, ok := s.Gateway()
	if !ok {
		return r.emitRecords(ctx, s)
	}
	g, err := r.store.Gateway(ctx, name)
	if errors.Is(err, ErrNotFound) {
		r.emit(Event{Subtree: s, Revoked: true})
		return nil
	}
	if err != nil {
		return err
	}
	recs, err := r.store.Records(ctx, s)
	if err != nil {
		return err
	}
	// Another node may have changed the gateway's custom domains too.
	claims, err := r.store.DomainClaims(ctx, name)
	if err != nil {
		return err
	}
	r.emit(Event{Subtree: s, Gateway: g, Records: recs, RecordsChanged: true, Revoked: g.Expired,
		Domains: claimedDomains(claims), DomainsChanged: true})
	return nil
}

// Start runs the ping committers and the sweeper until Stop.
func (r *Registry) Start() {
	for range r.cfg.PingWorkers {
		r.wg.Go(r.pingLoop)
	}
	r.wg.Go(r.sweepLoop)
}

// Stop ends the background work and waits for it.
func (r *Registry) Stop() {
	close(r.stop)
	r.wg.Wait()
}

// SubscribeRequest is a registration or a reclamation of a name.
type SubscribeRequest struct {
	Name             string
	Email            string
	ReclamationToken string
	Description      string
	Mode             Mode
	// EmailWithoutMail stores Email unverified and mails nothing: the
	// compatible surface, where the WebThings gateway calls /setemail
	// right after and that call sends the one verification mail.
	EmailWithoutMail bool
}

// Subscription is what a successful subscribe returns; Token is shown once.
type Subscription struct {
	Name  string
	Token string
	// Reclaimed is true when an existing name moved to a new token.
	Reclaimed bool
}

const maxDescription = 256

// Subscribe registers req.Name, or, with a matching reclamation token,
// gives the existing name a new token (the old one stops working).
func (r *Registry) Subscribe(ctx context.Context, req SubscribeRequest) (*Subscription, error) {
	return r.subscribe(ctx, req, nil)
}

func (r *Registry) subscribe(ctx context.Context, req SubscribeRequest, allowFrom []netip.Prefix) (*Subscription, error) {
	if err := r.names.Check(req.Name); err != nil {
		return nil, err
	}
	if req.Mode == "" {
		req.Mode = ModeTunnel
	}
	if !req.Mode.Valid() {
		return nil, fmt.Errorf("%w: mode must be tunnel or dynamic", ErrInvalidInput)
	}
	if err := checkText(req.Description, maxDescription, "description"); err != nil {
		return nil, err
	}
	if req.Email != "" {
		if err := checkEmail(req.Email); err != nil {
			return nil, err
		}
	}
	if req.ReclamationToken != "" {
		return r.reclaimWithToken(ctx, req)
	}
	token, hash := NewToken()
	now := r.now().UTC()
	g := &Gateway{Name: req.Name, TokenHash: hash, Mode: req.Mode, Description: req.Description, AllowFrom: allowFrom, Created: now}
	var verifyToken string
	if req.Email != "" && !req.EmailWithoutMail {
		var vh []byte
		verifyToken, vh = NewToken()
		g.VerifyTokenHash, g.VerifyExpires = vh, now.Add(r.cfg.VerifyTTL)
	}
	err := r.store.CreateGateway(ctx, g, req.Email)
	if errors.Is(err, ErrNameTaken) {
		existing, gerr := r.store.Gateway(ctx, req.Name)
		if gerr == nil && reclaimable(existing, req.Email) {
			return nil, ErrReclaimable
		}
		return nil, ErrNameTaken
	}
	if err != nil {
		return nil, err
	}
	r.ensureSealed(ctx, g, token)
	r.emit(Event{Subtree: GatewaySubtree(g.Name), Gateway: g, RecordsChanged: true})
	if verifyToken != "" && r.notifier != nil {
		// The name is registered either way; a mail that failed can be
		// asked for again with /setemail.
		_ = r.notifier.SendVerification(ctx, req.Email, g.Name, verifyToken)
	}
	return &Subscription{Name: g.Name, Token: token}, nil
}

func (r *Registry) reclaimWithToken(ctx context.Context, req SubscribeRequest) (*Subscription, error) {
	rt, err := normalizeReclaimToken(req.ReclamationToken)
	if err != nil {
		return nil, ErrTokenMismatch
	}
	token, hash := NewToken()
	now := r.now()
	g, err := r.store.UpdateGateway(ctx, req.Name, func(g *Gateway) (*string, error) {
		if !TokenMatches(rt, g.ReclaimTokenHash) {
			return nil, ErrTokenMismatch
		}
		if g.Disabled {
			return nil, fmt.Errorf("%w: %s", ErrDisabled, g.Name)
		}
		if now.After(g.ReclaimExpires) {
			return nil, ErrExpiredToken
		}
		g.TokenHash = hash
		g.ReclaimTokenHash, g.ReclaimExpires = nil, time.Time{}
		g.Mode = req.Mode
		if req.Description != "" {
			g.Description = req.Description
		}
		return nil, nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, ErrTokenMismatch
	}
	if err != nil {
		return nil, err
	}
	r.ensureSealed(ctx, g, token)
	r.emit(Event{Subtree: GatewaySubtree(g.Name), Gateway: g, Revoked: true})
	return &Subscription{Name: g.Name, Token: token, Reclaimed: true}, nil
}

// Authenticate returns the gateway that owns token.
func (r *Registry) Authenticate(ctx context.Context, token string) (*Gateway, error) {
	if CheckTokenSyntax(token) != nil {
		return nil, ErrNotFound
	}
	g, err := r.store.GatewayByToken(ctx, HashToken(token))
	if err != nil {
		return nil, err
	}
	if g.Disabled {
		return nil, fmt.Errorf("%w: %s", ErrDisabled, g.Name)
	}
	r.ensureSealed(ctx, g, token)
	return g, nil
}

// Unsubscribe deletes the gateway that owns token (or reclamation token).
func (r *Registry) Unsubscribe(ctx context.Context, token, reclamationToken string) error {
	var g *Gateway
	var err error
	switch {
	case token != "":
		g, err = r.Authenticate(ctx, token)
	case reclamationToken != "":
		rt, nerr := normalizeReclaimToken(reclamationToken)
		if nerr != nil {
			return ErrNotFound
		}
		g, err = r.store.GatewayByReclaimToken(ctx, HashToken(rt))
		if err == nil && r.now().After(g.ReclaimExpires) {
			return ErrExpiredToken
		}
	default:
		return fmt.Errorf("%w: token or reclamationToken required", ErrInvalidInput)
	}
	if err != nil {
		return err
	}
	if err := r.store.DeleteGateway(ctx, g.Name); err != nil {
		return err
	}
	r.emit(Event{Subtree: GatewaySubtree(g.Name), Revoked: true})
	return nil
}

// reclaimable reports whether a subscription of g's name that gave email
// may be told that a reclamation is possible: g's owner has a verified
// email and, as on the original server, the email given (if any) is that
// one. A different email learns only that the name is taken.
func reclaimable(g *Gateway, email string) bool {
	if !g.EmailVerified || g.AccountID == 0 || g.Email == "" {
		return false
	}
	return email == "" || strings.EqualFold(email, g.Email)
}

// Reclaim mails a single-use reclamation token to the verified email of name.
func (r *Registry) Reclaim(ctx context.Context, name string) error {
	return r.reclaim(ctx, name, NewToken)
}

// ReclaimUUID is Reclaim with the token as a lowercase UUID, the only form
// the WebThings gateway's setup page accepts (the compatible surface).
func (r *Registry) ReclaimUUID(ctx context.Context, name string) error {
	return r.reclaim(ctx, name, NewReclaimToken)
}

func (r *Registry) reclaim(ctx context.Context, name string, newToken func() (string, []byte)) error {
	if err := r.names.Check(name); err != nil {
		return err
	}
	if r.notifier == nil {
		return ErrNoMailer
	}
	token, hash := newToken()
	now := r.now()
	g, err := r.store.UpdateGateway(ctx, name, func(g *Gateway) (*string, error) {
		if g.AccountID == 0 || !g.EmailVerified || g.Email == "" {
			return nil, ErrNoEmail
		}
		g.ReclaimTokenHash, g.ReclaimExpires = hash, now.Add(r.cfg.ReclaimTTL)
		return nil, nil
	})
	if err != nil {
		return err
	}
	return r.notifier.SendReclamation(ctx, g.Email, g.Name, token)
}

// SetEmail links the gateway to email (unverified) and mails a verification link.
func (r *Registry) SetEmail(ctx context.Context, token, email string, optOut bool) error {
	if err := checkEmail(email); err != nil {
		return err
	}
	if r.notifier == nil {
		return ErrNoMailer
	}
	g, err := r.Authenticate(ctx, token)
	if err != nil {
		return err
	}
	verifyToken, vh := NewToken()
	now := r.now()
	g, err = r.store.UpdateGateway(ctx, g.Name, func(g *Gateway) (*string, error) {
		g.EmailVerified = false
		g.VerifyTokenHash, g.VerifyExpires = vh, now.Add(r.cfg.VerifyTTL)
		return &email, nil
	})
	if err != nil {
		return err
	}
	if err := r.store.SetAccountOptOut(ctx, g.AccountID, optOut); err != nil {
		return err
	}
	return r.notifier.SendVerification(ctx, email, g.Name, verifyToken)
}

// VerifyEmail marks the email behind a verification link as verified.
func (r *Registry) VerifyEmail(ctx context.Context, s string) (*Gateway, error) {
	if CheckTokenSyntax(s) != nil {
		return nil, ErrNotFound
	}
	g, err := r.store.GatewayByVerifyToken(ctx, HashToken(s))
	if err != nil {
		return nil, err
	}
	now := r.now()
	return r.store.UpdateGateway(ctx, g.Name, func(g *Gateway) (*string, error) {
		if !TokenMatches(s, g.VerifyTokenHash) {
			return nil, ErrNotFound
		}
		if now.After(g.VerifyExpires) {
			return nil, ErrExpiredToken
		}
		g.EmailVerified = true
		g.VerifyTokenHash, g.VerifyExpires = nil, time.Time{}
		return nil, nil
	})
}

// RevokeEmail un-verifies the gateway's email: it can no longer reclaim.
func (r *Registry) RevokeEmail(ctx context.Context, token string) error {
	g, err := r.Authenticate(ctx, token)
	if err != nil {
		return err
	}
	_, err = r.store.UpdateGateway(ctx, g.Name, func(g *Gateway) (*string, error) {
		g.EmailVerified = false
		g.VerifyTokenHash, g.VerifyExpires = nil, time.Time{}
		g.ReclaimTokenHash, g.ReclaimExpires = nil, time.Time{}
		return nil, nil
	})
	return err
}

// Discover lists the live gateways last seen from ip.
func (r *Registry) Discover(ctx context.Context, ip netip.Addr) ([]*Gateway, error) {
	return r.store.GatewaysByPublicIP(ctx, ip.Unmap())
}

const maxChallenge = 255

// AddChallenge adds an ACME DNS-01 value to _acme-challenge.NAME (the
// compatible /dnsconfig). Several values coexist, as a certificate for NAME
// and *.NAME needs two at once.
func (r *Registry) AddChallenge(ctx context.Context, token, value string) error {
	if value == "" || len(value) > maxChallenge || !printableASCII(value) {
		return fmt.Errorf("%w: challenge must be 1 to %d printable ASCII characters", ErrInvalidInput, maxChallenge)
	}
	g, err := r.Authenticate(ctx, token)
	if err != nil {
		return err
	}
	s := GatewaySubtree(g.Name)
	rec := Record{Subtree: s, Owner: "_acme-challenge", Type: "TXT", Value: value, TTL: 60 * time.Second, Created: r.now().UTC()}
	if err := r.store.AppendRecords(ctx, s, []Record{rec}, r.checkSubtree); err != nil {
		return err
	}
	return r.emitRecords(ctx, s)
}

// emitRecords tells observers the subtree's records as they now are, with
// the gateway's state for a gateway's subtree.
func (r *Registry) emitRecords(ctx context.Context, s Subtree) error {
	ev := Event{Subtree: s, RecordsChanged: true}
	if name, ok := s.Gateway(); ok {
		g, err := r.store.Gateway(ctx, name)
		if err != nil {
			return err
		}
		ev.Gateway = g
	}
	recs, err := r.store.Records(ctx, s)
	if err != nil {
		return err
	}
	ev.Records = recs
	r.emit(ev)
	return nil
}

func checkEmail(email string) error {
	if len(email) > 254 || !utf8.ValidString(email) {
		return ErrInvalidEmail
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || !strings.Contains(email, "@") {
		return ErrInvalidEmail
	}
	return nil
}

func checkText(s string, maxLen int, what string) error {
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidInput, what, maxLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not UTF-8", ErrInvalidInput, what)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: %s contains control characters", ErrInvalidInput, what)
		}
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
