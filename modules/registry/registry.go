// Package registry holds the gateways that Gatehouse knows: their names, hashed
// tokens, modes, reported addresses, email accounts and DNS records, and the
// rules that govern them (name syntax, tokens, reclamation, expiry).
//
// It knows nothing of HTTP, DNS wire formats or Caddy. Stores (SQLite,
// PostgreSQL) live in sub-packages and implement Store; the Registry type
// layers the business rules on top of any Store.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Mode says which address NAME.ZONE resolves to.
type Mode string

const (
	// ModeTunnel points the name at the cloud's tunnel addresses.
	ModeTunnel Mode = "tunnel"
	// ModeDynamic points the name at the public address the gateway reports.
	ModeDynamic Mode = "dynamic"
)

// Valid reports whether m is a known mode.
func (m Mode) Valid() bool { return m == ModeTunnel || m == ModeDynamic }

// Gateway is one registered name. Secrets are only ever held as SHA-256 hashes.
type Gateway struct {
	Name        string
	TokenHash   []byte
	Mode        Mode
	Description string

	// AccountID is the owner's email account, 0 when none was set.
	AccountID int64
	// Email is the account's address, filled by reads that join accounts.
	Email string
	// OptOut is the account's opt-out flag, filled by reads that join accounts.
	OptOut bool
	// EmailVerified is true once the owner followed the verification link.
	EmailVerified bool
	// VerifyTokenHash is the hash of the pending email verification token.
	VerifyTokenHash []byte
	VerifyExpires   time.Time
	// ReclaimTokenHash is the hash of the pending single-use reclamation token.
	ReclaimTokenHash []byte
	ReclaimExpires   time.Time

	LastPing time.Time
	PublicV4 netip.Addr
	PublicV6 netip.Addr
	// LocalAddrs are the LAN addresses the gateway reports.
	LocalAddrs []netip.Addr
	// Expired is set by the sweeper when the gateway has been silent for too
	// long; its addresses are cleared and DNS answers NXDOMAIN until it pings.
	Expired bool
	// Disabled is set by the operator: the name stays registered (and so
	// unavailable to others) but DNS answers NXDOMAIN, its tunnel is
	// closed and its token is refused with ErrDisabled until enabled.
	Disabled bool
	// AllowFrom, when not empty, are the only client networks from which
	// the acme-dns /update accepts the gateway's token (acme-dns's
	// allowfrom, given at /register). Empty: any address.
	AllowFrom []netip.Prefix
	Created   time.Time
}

// AllowsFrom reports whether the acme-dns /update may be called from ip.
func (g *Gateway) AllowsFrom(ip netip.Addr) bool {
	if len(g.AllowFrom) == 0 {
		return true
	}
	ip = ip.Unmap()
	for _, p := range g.AllowFrom {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Record is one DNS record in a subtree: a gateway's or the zone's own.
type Record struct {
	// Subtree owns the record.
	Subtree Subtree
	// Owner is the name relative to the subtree's root (NAME.ZONE, or
	// ZONE for the zone's subtree): "" for the root itself,
	// "_acme-challenge", "www", "_acme-challenge.www", ...
	Owner string
	// Type is "TXT", "A", "AAAA" or "CNAME".
	Type  string
	Value string
	TTL   time.Duration
	// Created orders records and lets stale challenges be pruned.
	Created time.Time
}

// Account is an email address that owns gateways.
type Account struct {
	ID      int64
	Email   string
	OptOut  bool
	Created time.Time
}

// PingRequest is one gateway's periodic report.
type PingRequest struct {
	TokenHash []byte
	At        time.Time
	// PublicV4 / PublicV6: the address seen on the connection; the zero
	// value leaves the stored one unchanged.
	PublicV4 netip.Addr
	PublicV6 netip.Addr
	// LocalAddrs replaces the stored LAN addresses when non-nil.
	LocalAddrs []netip.Addr
}

// PingResult answers one PingRequest of a batch.
type PingResult struct {
	Gateway *Gateway // nil with Err
	// WasExpired is true when this ping brought an expired gateway back.
	WasExpired bool
	Err        error
}

// RecordFilter selects records for deletion or lookup; empty fields match
// anything (libdns delete semantics).
type RecordFilter struct {
	Owner *string // nil: any owner
	Type  string
	Value string
	// TTL, when not 0, must equal the stored TTL: libdns deletes only
	// records that match exactly in every field it is given.
	TTL time.Duration
}

// Errors that callers branch on. The API maps them to its JSON error names.
var (
	ErrNotFound      = errors.New("not found")
	ErrNameTaken     = errors.New("name already registered")
	ErrInvalidName   = errors.New("invalid name")
	ErrReservedName  = errors.New("reserved name")
	ErrTokenMismatch = errors.New("token mismatch")
	ErrNoEmail       = errors.New("no verified email")
	ErrTooMany       = errors.New("too many records")
	ErrConflict      = errors.New("conflicting record")
	// ErrTooLarge: the records at one owner would not fit a DNS answer.
	ErrTooLarge = errors.New("records too large")
	// ErrDisabled: the operator disabled the gateway; its token is refused.
	ErrDisabled = errors.New("gateway disabled by the operator")
	// ErrExpired: the gateway expired; only its own ping brings it back.
	ErrExpired = errors.New("gateway expired")
)

// ResyncAll is delivered by Store.Changes when individual changes may have
// been missed: the zero Subtree, which names none in particular.
var ResyncAll = Subtree{}

// RecordCheck validates a subtree's whole record set as a write would
// leave it. A store calls it inside the writing transaction, after the
// write, and writes nothing when it fails, so that rules spanning several
// requests (a limit, CNAME exclusivity) hold against concurrent writers.
type RecordCheck func(all []Record) error

// AtMost is the RecordCheck that only bounds the number of records.
func AtMost(max int) RecordCheck {
	return func(all []Record) error {
		if len(all) > max {
			return fmt.Errorf("%w: the subtree would hold %d records, at most %d", ErrTooMany, len(all), max)
		}
		return nil
	}
}

// Store persists gateways, accounts and records. Every method is atomic: it
// either applies entirely or not at all. Implementations must be safe for
// concurrent use.
type Store interface {
	// CreateGateway inserts g; ErrNameTaken if the name exists. When email
	// is non-empty, the account is found or created in the same transaction
	// and g.AccountID set.
	CreateGateway(ctx context.Context, g *Gateway, email string) error
	// Gateway returns the named gateway (with its account joined) or ErrNotFound.
	Gateway(ctx context.Context, name string) (*Gateway, error)
	// GatewayByToken finds a gateway by its token hash, or ErrNotFound.
	GatewayByToken(ctx context.Context, tokenHash []byte) (*Gateway, error)
	// GatewayByReclaimToken finds a gateway by its reclamation token hash.
	GatewayByReclaimToken(ctx context.Context, hash []byte) (*Gateway, error)
	// GatewayByVerifyToken finds a gateway by its email verification token hash.
	GatewayByVerifyToken(ctx context.Context, hash []byte) (*Gateway, error)
	// UpdateGateway reads the named gateway under a write lock, calls fn, and
	// writes every field of the result back in the same transaction. If fn
	// returns an error nothing is written. email, when non-nil, re-links the
	// gateway to the account of that address (created if needed; "" unlinks).
	UpdateGateway(ctx context.Context, name string, fn func(g *Gateway) (email *string, err error)) (*Gateway, error)
	// SetAccountOptOut updates the opt-out flag of an account.
	SetAccountOptOut(ctx context.Context, accountID int64, optOut bool) error
	// DeleteGateway removes the gateway and its records, or ErrNotFound.
	DeleteGateway(ctx context.Context, name string) error
	// PingBatch applies several pings in one transaction (group commit).
	// Unknown tokens give ErrNotFound in their own result only. A ping clears
	// Expired.
	PingBatch(ctx context.Context, pings []PingRequest) []PingResult
	// ExpireSilent marks every non-expired gateway whose last ping (or
	// creation, if it never pinged) is before cutoff as expired, clears its
	// addresses, and returns their names.
	ExpireSilent(ctx context.Context, cutoff time.Time) ([]string, error)
	// GatewaysByPublicIP lists the non-expired gateways whose last public
	// IPv4 or IPv6 address is ip.
	GatewaysByPublicIP(ctx context.Context, ip netip.Addr) ([]*Gateway, error)
	// ForEachGateway calls fn for every gateway with its records, in name
	// order, to load in-memory indexes at start. fn must not call the store.
	ForEachGateway(ctx context.Context, fn func(g *Gateway, recs []Record) error) error
	// CountGateways returns the number of registered gateways.
	CountGateways(ctx context.Context) (int, error)
	// SealToken stores sealed (the gateway's token under the seal key)
	// beside tokenHash, replacing an older seal, only while tokenHash is
	// the gateway's token; ErrNotFound otherwise.
	SealToken(ctx context.Context, name string, tokenHash, sealed []byte) error
	// SealedToken returns the seal of the gateway's current token and that
	// token's hash, or ErrNotFound (no seal, or only one of an old token).
	SealedToken(ctx context.Context, name string) (tokenHash, sealed []byte, err error)

	// Records returns the subtree's records (all owners), oldest first;
	// ErrNotFound for an unknown gateway. The zone's subtree always
	// exists. Every records method refuses the zero Subtree (ErrNoSubtree).
	Records(ctx context.Context, s Subtree) ([]Record, error)
	// AppendRecords adds records; an identical record (owner, type, value)
	// already present is kept, not duplicated. If check refuses the
	// subtree's records as they would then be, nothing is written and its
	// error returned.
	AppendRecords(ctx context.Context, s Subtree, recs []Record, check RecordCheck) error
	// SetRecords replaces, for every (owner, type) pair present in recs,
	// the whole RRset with the given records, atomically; same check rule.
	SetRecords(ctx context.Context, s Subtree, recs []Record, check RecordCheck) error
	// DeleteRecords removes the records matching any of the filters and
	// returns those removed.
	DeleteRecords(ctx context.Context, s Subtree, filters []RecordFilter) ([]Record, error)
	// PruneRecords deletes records of the given owner and type created
	// before cutoff, across all subtrees (the zone's included), and
	// returns the affected subtrees.
	PruneRecords(ctx context.Context, owner, rtype string, cutoff time.Time) ([]Subtree, error)

	// Changes delivers the subtrees changed by other processes sharing
	// the store. A shared store (PostgreSQL) announces every write
	// inside the writing transaction (pg_notify), so a committed change is
	// never silent; a process does not receive its own announcements.
	// Unshared stores return a nil channel. The channel closes when ctx ends.
	// ResyncAll in place of a subtree means changes may have been missed
	// (the listener reconnected): the reader reloads everything.
	Changes(ctx context.Context) (<-chan Subtree, error)

	// ClaimDomain stores c (Domain lower-case ASCII), or, when c.Gateway
	// already holds c.Domain, refreshes its Checked time. ErrDomainTaken
	// when another gateway holds it, ErrNotFound for an unknown gateway.
	// The gateway's subtree counts as changed (announced to other nodes).
	ClaimDomain(ctx context.Context, c DomainClaim) error
	// DomainClaims lists the claims of gateway, or every claim for "",
	// in domain order.
	DomainClaims(ctx context.Context, gateway string) ([]DomainClaim, error)
	// ReleaseDomain removes gateway's claim on domain, or ErrNotFound; an
	// empty domain removes every claim of gateway (none is no error).
	ReleaseDomain(ctx context.Context, gateway, domain string) error

	Close() error
}
