// Package backup writes a whole registry (accounts, gateways with their
// hashed secrets, records, run-time reserved names) as a versioned JSON
// Lines stream, reads it back into a store, and moves a registry from one
// store to another.
//
// The stream's first line is a header (format, version, the counts when
// the export began), every other line one row, and the last a trailer with
// the counts written and a checksum. The checksum is the sum, modulo
// 2^256, of the SHA-256 of every row line: it does not depend on the order
// in which a store lists its rows (PostgreSQL's collation may sort names
// differently from SQLite's), so the exports of two stores holding the
// same registry carry the same checksum, which is how Migrate verifies.
package backup

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"time"

	"github.com/gatehouse-project/gatehouse/modules/registry"
)

// Format names the stream; Version is the newest this code reads.
const (
	Format  = "gatehouse-registry"
	Version = 1
)

// Errors of import and migration.
var (
	ErrNotEmpty  = errors.New("the target registry is not empty (use force to import into it)")
	ErrTruncated = errors.New("the stream ends before its trailer: interrupted export or copy")
	ErrCorrupt   = errors.New("the stream is corrupt")
	ErrVersion   = errors.New("unsupported stream version")
	ErrMismatch  = errors.New("the target does not hold what the source does")
)

// maxLine bounds one line: a gateway with every field at its limit is a
// few kilobytes, a record at most a DNS answer.
const maxLine = 1 << 20

// Header is the first line.
type Header struct {
	Type    string          `json:"type"`
	Format  string          `json:"format"`
	Version int             `json:"version"`
	Created time.Time       `json:"created"`
	Counts  registry.Counts `json:"counts"`
}

// Trailer is the last line.
type Trailer struct {
	Type     string          `json:"type"`
	Counts   registry.Counts `json:"counts"`
	Checksum string          `json:"checksum"`
}

// line is every row kind's fields; Type says which apply.
type line struct {
	Type string `json:"type"`
	// account, gateway
	Email   string    `json:"email,omitempty"`
	OptOut  bool      `json:"opt_out,omitempty"`
	Created time.Time `json:"created,omitzero"`
	// gateway, reserved
	Name string `json:"name,omitempty"`
	// gateway
	TokenHash        []byte         `json:"token_hash,omitempty"`
	Mode             string         `json:"mode,omitempty"`
	Description      string         `json:"description,omitempty"`
	EmailVerified    bool           `json:"email_verified,omitempty"`
	VerifyTokenHash  []byte         `json:"verify_token_hash,omitempty"`
	VerifyExpires    time.Time      `json:"verify_expires,omitzero"`
	ReclaimTokenHash []byte         `json:"reclaim_token_hash,omitempty"`
	ReclaimExpires   time.Time      `json:"reclaim_expires,omitzero"`
	LastPing         time.Time      `json:"last_ping,omitzero"`
	PublicV4         netip.Addr     `json:"public_v4,omitzero"`
	PublicV6         netip.Addr     `json:"public_v6,omitzero"`
	LocalAddrs       []netip.Addr   `json:"local_addrs,omitempty"`
	Expired          bool           `json:"expired,omitempty"`
	Disabled         bool           `json:"disabled,omitempty"`
	AllowFrom        []netip.Prefix `json:"allow_from,omitempty"`
	// seal: the gateway's token sealed under the cloud's seal key, with
	// the hash of the token it seals (Name and TokenHash above)
	Sealed []byte `json:"sealed,omitempty"`
	// record: Gateway "" is the zone's own subtree
	Gateway string `json:"gateway,omitempty"`
	Owner   string `json:"owner,omitempty"`
	RType   string `json:"rtype,omitempty"`
	Value   string `json:"value,omitempty"`
	TTL     int64  `json:"ttl,omitempty"`
	// domain: a custom domain Gateway holds (Created above)
	Domain  string    `json:"domain,omitempty"`
	Checked time.Time `json:"checked,omitzero"`
}

// t normalises a time: UTC and microseconds, PostgreSQL's resolution, so
// that a row reads the same from either store.
func t(v time.Time) time.Time {
	if v.IsZero() {
		return time.Time{}
	}
	return v.UTC().Truncate(time.Microsecond)
}

// checksum accumulates the order-independent sum of the lines' hashes.
type checksum struct{ sum big.Int }

var mod = new(big.Int).Lsh(big.NewInt(1), 256)

func (c *checksum) add(b []byte) {
	h := sha256.Sum256(b)
	c.sum.Add(&c.sum, new(big.Int).SetBytes(h[:]))
	c.sum.Mod(&c.sum, mod)
}

func (c *checksum) String() string {
	var b [32]byte
	return hex.EncodeToString(c.sum.FillBytes(b[:]))
}

// Export writes the registry in s to w and returns its trailer. The rows
// are read as they are: export a live registry for a backup, but stop
// writes for a copy that must match exactly.
func Export(ctx context.Context, s registry.BackupStore, w io.Writer) (Trailer, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	counts, err := s.Counts(ctx)
	if err != nil {
		return Trailer{}, err
	}
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(Header{Type: "header", Format: Format, Version: Version, Created: t(time.Now()), Counts: counts}); err != nil {
		return Trailer{}, fmt.Errorf("export: %w", err)
	}
	var (
		sum checksum
		n   registry.Counts
	)
	write := func(l *line, count *int) error {
		b, err := json.Marshal(l)
		if err != nil {
			return fmt.Errorf("export %s: %w", l.Type, err)
		}
		sum.add(b)
		*count++
		b = append(b, '\n')
		if _, err := bw.Write(b); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return nil
	}
	err = s.ForEachAccount(ctx, func(a registry.Account) error {
		return write(&line{Type: "account", Email: a.Email, OptOut: a.OptOut, Created: t(a.Created)}, &n.Accounts)
	})
	if err != nil {
		return Trailer{}, err
	}
	var names []string
	err = s.ForEachGateway(ctx, func(g *registry.Gateway, recs []registry.Record) error {
		names = append(names, g.Name)
		if err := write(gatewayLine(g), &n.Gateways); err != nil {
			return err
		}
		for _, r := range recs {
			if err := write(recordLine(r), &n.Records); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Trailer{}, err
	}
	// The sealed tokens (PageKite needs them back), read after the walk
	// because its callback must not call the store. They are not counted
	// in Counts (a copy without a seal key has none), but the checksum
	// covers them.
	var seals int
	for _, name := range names {
		hash, sealed, err := s.SealedToken(ctx, name)
		if errors.Is(err, registry.ErrNotFound) {
			continue
		}
		if err != nil {
			return Trailer{}, fmt.Errorf("export seal of %s: %w", name, err)
		}
		if err := write(&line{Type: "seal", Name: name, TokenHash: hash, Sealed: sealed}, &seals); err != nil {
			return Trailer{}, err
		}
	}
	zone, err := s.Records(ctx, registry.ZoneSubtree())
	if err != nil {
		return Trailer{}, err
	}
	for _, r := range zone {
		if err := write(recordLine(r), &n.Records); err != nil {
			return Trailer{}, err
		}
	}
	domains, err := s.DomainClaims(ctx, "")
	if err != nil {
		return Trailer{}, err
	}
	for _, c := range domains {
		if err := write(&line{Type: "domain", Domain: c.Domain, Gateway: c.Gateway, Created: t(c.Created), Checked: t(c.Checked)}, &n.Domains); err != nil {
			return Trailer{}, err
		}
	}
	reserved, err := s.ReservedNames(ctx)
	if err != nil {
		return Trailer{}, err
	}
	for _, name := range reserved {
		if err := write(&line{Type: "reserved", Name: name}, &n.Reserved); err != nil {
			return Trailer{}, err
		}
	}
	tr := Trailer{Type: "trailer", Counts: n, Checksum: sum.String()}
	if err := enc.Encode(tr); err != nil {
		return Trailer{}, fmt.Errorf("export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return Trailer{}, fmt.Errorf("export: %w", err)
	}
	return tr, nil
}

func gatewayLine(g *registry.Gateway) *line {
	return &line{
		Type: "gateway", Name: g.Name, TokenHash: g.TokenHash, Mode: string(g.Mode),
		Description: g.Description, Email: g.Email, EmailVerified: g.EmailVerified,
		VerifyTokenHash: g.VerifyTokenHash, VerifyExpires: t(g.VerifyExpires),
		ReclaimTokenHash: g.ReclaimTokenHash, ReclaimExpires: t(g.ReclaimExpires),
		LastPing: t(g.LastPing), PublicV4: g.PublicV4, PublicV6: g.PublicV6,
		LocalAddrs: g.LocalAddrs, Expired: g.Expired, Disabled: g.Disabled, AllowFrom: g.AllowFrom, Created: t(g.Created),
	}
}

func recordLine(r registry.Record) *line {
	name, _ := r.Subtree.Gateway()
	return &line{Type: "record", Gateway: name, Owner: r.Owner, RType: r.Type, Value: r.Value,
		TTL: int64(r.TTL / time.Second), Created: t(r.Created)}
}

// ImportOptions tune Import.
type ImportOptions struct {
	// Force imports into a registry that already holds rows; rows already
	// there are kept. Run an interrupted import again with Force to
	// finish it.
	Force bool
	// BatchSize is the rows per transaction (0: 1000).
	BatchSize int
	// Progress, when set, is called after each batch with the rows read
	// so far and the header's total.
	Progress func(done, total int)
}

// Import reads a stream written by Export into s, one transaction per
// batch. It returns the stream's trailer and what it inserted; a stream
// cut short returns ErrTruncated with the batches before the cut
// committed, each whole.
func Import(ctx context.Context, s registry.BackupStore, r io.Reader, opts ImportOptions) (Trailer, registry.Counts, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	var inserted registry.Counts
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	lineNo := 0
	next := func() ([]byte, error) {
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				return nil, fmt.Errorf("%w: line %d: %w", ErrCorrupt, lineNo+1, err)
			}
			return nil, ErrTruncated
		}
		lineNo++
		return sc.Bytes(), nil
	}
	first, err := next()
	if err != nil {
		return Trailer{}, inserted, err
	}
	var h Header
	if err := json.Unmarshal(first, &h); err != nil || h.Type != "header" || h.Format != Format {
		return Trailer{}, inserted, fmt.Errorf("%w: line 1 is not a %s header", ErrCorrupt, Format)
	}
	if h.Version < 1 || h.Version > Version {
		return Trailer{}, inserted, fmt.Errorf("%w: %d (this program reads up to %d)", ErrVersion, h.Version, Version)
	}
	if !opts.Force {
		c, err := s.Counts(ctx)
		if err != nil {
			return Trailer{}, inserted, err
		}
		if !c.Zero() {
			return Trailer{}, inserted, fmt.Errorf("%w: it holds %d gateways, %d accounts, %d records, %d reserved names",
				ErrNotEmpty, c.Gateways, c.Accounts, c.Records, c.Reserved)
		}
	}
	total := h.Counts.Accounts + h.Counts.Gateways + h.Counts.Records + h.Counts.Reserved + h.Counts.Domains
	var (
		sum   checksum
		read  registry.Counts
		batch registry.ImportBatch
		rows  int
	)
	flush := func() error {
		if rows == 0 {
			return nil
		}
		got, err := s.Import(ctx, batch)
		if err != nil {
			return fmt.Errorf("import batch ending at line %d: %w", lineNo, err)
		}
		inserted = inserted.Add(got)
		batch, rows = registry.ImportBatch{}, 0
		if opts.Progress != nil {
			done := read.Accounts + read.Gateways + read.Records + read.Reserved + read.Domains
			opts.Progress(done, total)
		}
		return nil
	}
	for {
		b, err := next()
		if err != nil {
			// The rows read so far are whole batches or the last one:
			// commit it, so that a rerun has less to do.
			return Trailer{}, inserted, errors.Join(err, flush())
		}
		var l line
		if err := json.Unmarshal(b, &l); err != nil {
			return Trailer{}, inserted, errors.Join(fmt.Errorf("%w: line %d: %w", ErrCorrupt, lineNo, err), flush())
		}
		if l.Type == "trailer" {
			if err := flush(); err != nil {
				return Trailer{}, inserted, err
			}
			var tr Trailer
			if err := json.Unmarshal(b, &tr); err != nil {
				return Trailer{}, inserted, fmt.Errorf("%w: trailer: %w", ErrCorrupt, err)
			}
			if tr.Counts != read {
				return tr, inserted, fmt.Errorf("%w: the trailer counts %+v, the stream holds %+v", ErrCorrupt, tr.Counts, read)
			}
			if tr.Checksum != sum.String() {
				return tr, inserted, fmt.Errorf("%w: checksum %s, the stream's rows sum to %s", ErrCorrupt, tr.Checksum, sum.String())
			}
			if sc.Scan() {
				return tr, inserted, fmt.Errorf("%w: data after the trailer", ErrCorrupt)
			}
			return tr, inserted, nil
		}
		if l.Type == "seal" {
			// A seal belongs to a gateway of an earlier line: commit the
			// batch that holds it first.
			if l.Name == "" || len(l.TokenHash) == 0 || len(l.Sealed) == 0 {
				return Trailer{}, inserted, errors.Join(fmt.Errorf("%w: line %d: seal without name, token hash or seal", ErrCorrupt, lineNo), flush())
			}
			if err := flush(); err != nil {
				return Trailer{}, inserted, err
			}
			if err := s.SealToken(ctx, l.Name, l.TokenHash, l.Sealed); err != nil {
				return Trailer{}, inserted, fmt.Errorf("import seal of %s at line %d: %w", l.Name, lineNo, err)
			}
			sum.add(b)
			continue
		}
		if err := addLine(&batch, &read, &l); err != nil {
			return Trailer{}, inserted, errors.Join(fmt.Errorf("%w: line %d: %w", ErrCorrupt, lineNo, err), flush())
		}
		sum.add(b)
		rows++
		if rows >= opts.BatchSize {
			if err := flush(); err != nil {
				return Trailer{}, inserted, err
			}
		}
	}
}

// addLine checks one row and adds it to the batch.
func addLine(b *registry.ImportBatch, n *registry.Counts, l *line) error {
	switch l.Type {
	case "account":
		if l.Email == "" {
			return errors.New("account without an email")
		}
		b.Accounts = append(b.Accounts, registry.Account{Email: l.Email, OptOut: l.OptOut, Created: l.Created})
		n.Accounts++
	case "gateway":
		if err := registry.NewNames(nil).Check(l.Name); err != nil && !errors.Is(err, registry.ErrReservedName) {
			return err
		}
		if !registry.Mode(l.Mode).Valid() {
			return fmt.Errorf("gateway %s: mode %q", l.Name, l.Mode)
		}
		if l.Created.IsZero() {
			return fmt.Errorf("gateway %s: no creation time", l.Name)
		}
		b.Gateways = append(b.Gateways, &registry.Gateway{
			Name: l.Name, TokenHash: l.TokenHash, Mode: registry.Mode(l.Mode), Description: l.Description,
			Email: l.Email, EmailVerified: l.EmailVerified,
			VerifyTokenHash: l.VerifyTokenHash, VerifyExpires: l.VerifyExpires,
			ReclaimTokenHash: l.ReclaimTokenHash, ReclaimExpires: l.ReclaimExpires,
			LastPing: l.LastPing, PublicV4: l.PublicV4, PublicV6: l.PublicV6, LocalAddrs: l.LocalAddrs,
			Expired: l.Expired, Disabled: l.Disabled, AllowFrom: l.AllowFrom, Created: l.Created,
		})
		n.Gateways++
	case "record":
		sub := registry.ZoneSubtree()
		if l.Gateway != "" {
			sub = registry.GatewaySubtree(l.Gateway)
		}
		if l.RType == "" || l.TTL < 0 {
			return fmt.Errorf("record of %s: no type or a negative ttl", sub)
		}
		b.Records = append(b.Records, registry.Record{Subtree: sub, Owner: l.Owner, Type: l.RType, Value: l.Value,
			TTL: time.Duration(l.TTL) * time.Second, Created: l.Created})
		n.Records++
	case "domain":
		dom, err := registry.NormalizeDomain(l.Domain)
		if err != nil || dom != l.Domain || l.Gateway == "" || l.Created.IsZero() {
			return fmt.Errorf("domain %q: not a stored domain, or without gateway or creation time", l.Domain)
		}
		b.Domains = append(b.Domains, registry.DomainClaim{Domain: l.Domain, Gateway: l.Gateway, Created: l.Created, Checked: l.Checked})
		n.Domains++
	case "reserved":
		if l.Name == "" {
			return errors.New("reserved name empty")
		}
		b.Reserved = append(b.Reserved, l.Name)
		n.Reserved++
	default:
		return fmt.Errorf("unknown row type %q", l.Type)
	}
	return nil
}
