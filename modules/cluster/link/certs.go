package link

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertFunc returns the node's current link certificate. The link calls it
// on every handshake, as server and as client, so a renewed or rotated
// certificate serves the next link session while the sessions already
// open carry on.
type CertFunc func() (*tls.Certificate, error)

// leaf parses the certificate's leaf when tls.X509KeyPair has not.
func leaf(c *tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, errors.New("no certificate")
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// Renewing is a certificate issued by the node itself (from Caddy's pki
// CA): it is issued again once RenewAfter of its lifetime has passed, on
// the first handshake after that, long before it expires. A failed
// renewal keeps the current certificate and is retried shortly after.
type Renewing struct {
	issue func() (tls.Certificate, error)
	log   *slog.Logger
	// now is the clock; tests move it.
	now func() time.Time

	mu      sync.Mutex
	cur     *tls.Certificate
	renewAt time.Time
}

// RenewAfter is the part of a certificate's lifetime after which Renewing
// issues the next one: a week's certificate is renewed after 4.7 days.
const RenewAfter = 2.0 / 3

// NewRenewing issues the first certificate at once.
func NewRenewing(issue func() (tls.Certificate, error), log *slog.Logger) (*Renewing, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Renewing{issue: issue, log: log, now: time.Now}
	if err := r.renew(); err != nil {
		return nil, err
	}
	return r, nil
}

// renew issues a certificate; r.mu is held or r is not shared yet.
func (r *Renewing) renew() error {
	c, err := r.issue()
	if err != nil {
		return err
	}
	l, err := leaf(&c)
	if err != nil {
		return fmt.Errorf("issued link certificate: %w", err)
	}
	c.Leaf = l
	life := l.NotAfter.Sub(l.NotBefore)
	r.cur, r.renewAt = &c, l.NotBefore.Add(time.Duration(float64(life)*RenewAfter))
	return nil
}

// Certificate is a CertFunc: the current certificate, renewed first when
// it is due.
func (r *Renewing) Certificate() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Before(r.renewAt) {
		return r.cur, nil
	}
	old := r.cur.Leaf
	if err := r.renew(); err != nil {
		// The current certificate still serves; try again in a tenth
		// of what is left of it (between a second and a minute), so an
		// outage of the CA is retried well before the expiry.
		retry := min(max(old.NotAfter.Sub(now)/10, time.Second), time.Minute)
		r.renewAt = now.Add(retry)
		r.log.Warn("cluster link certificate: renewal failed, keeping the current one",
			"error", err, "not_after", old.NotAfter, "retry_in", retry)
		return r.cur, nil
	}
	r.log.Info("cluster link certificate renewed", "serial", r.cur.Leaf.SerialNumber.Text(16),
		"not_after", r.cur.Leaf.NotAfter, "previous_serial", old.SerialNumber.Text(16))
	return r.cur, nil
}

// FileCert is a certificate and key read from files, read again when
// either file changes (size or modification time, looked at no more than
// once per interval), so an operator rotates them without a restart. A
// pair that fails to load (say, the certificate written but not yet the
// key) keeps the current one and is tried again at the next look.
type FileCert struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger
	now               func() time.Time

	mu      sync.Mutex
	cur     *tls.Certificate
	checked time.Time
	stamp   [2]fileStamp
}

type fileStamp struct {
	size  int64
	mtime time.Time
}

// NewFileCert loads the pair now; every is how often a handshake looks at
// the files (0: every minute).
func NewFileCert(certFile, keyFile string, every time.Duration, log *slog.Logger) (*FileCert, error) {
	if every <= 0 {
		every = time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FileCert{certFile: certFile, keyFile: keyFile, every: every, log: log, now: time.Now}
	stamp, err := f.stat()
	if err != nil {
		return nil, err
	}
	if err := f.load(stamp); err != nil {
		return nil, err
	}
	f.checked = f.now()
	return f, nil
}

func (f *FileCert) stat() ([2]fileStamp, error) {
	var s [2]fileStamp
	for i, name := range []string{f.certFile, f.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return s, err
		}
		s[i] = fileStamp{fi.Size(), fi.ModTime()}
	}
	return s, nil
}

func (f *FileCert) load(stamp [2]fileStamp) error {
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return err
	}
	if c.Leaf, err = leaf(&c); err != nil {
		return err
	}
	f.cur, f.stamp = &c, stamp
	return nil
}

// Certificate is a CertFunc: the pair last loaded, read again first when
// the files changed.
func (f *FileCert) Certificate() (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Sub(f.checked) < f.every {
		return f.cur, nil
	}
	f.checked = now
	stamp, err := f.stat()
	if err == nil && stamp == f.stamp {
		return f.cur, nil
	}
	if err == nil {
		err = f.load(stamp)
	}
	if err != nil {
		f.log.Warn("cluster link certificate: cannot read the changed files, keeping the current certificate",
			"cert_file", f.certFile, "key_file", f.keyFile, "error", err, "not_after", f.cur.Leaf.NotAfter)
		return f.cur, nil
	}
	f.log.Info("cluster link certificate reloaded", "cert_file", f.certFile,
		"serial", f.cur.Leaf.SerialNumber.Text(16), "not_after", f.cur.Leaf.NotAfter)
	return f.cur, nil
}
