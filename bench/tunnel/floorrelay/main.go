// Command floorrelay is the tunnel benchmark's floor: the least CPU a
// userspace encrypted tunnel can spend per byte. Two processes of it make
// a tunnel with nothing else in it (no multiplexing, no framing beyond a
// length, no flow control):
//
//	client -> front ==TCP, AES-128-GCM records==> back -> server
//
// The front accepts clients and dials the back, one TCP connection per
// client connection; the back dials the server (-to) for each. Each
// direction of each relay is one read into a userland buffer, one AES-GCM
// pass in place and one write: the sealing side reads up to 64 KiB into a
// buffer with room for a 4-byte length in front and the 16-byte tag
// behind, seals it in place and writes the record with one write; the
// opening side reads the length, then the record, opens it in place and
// writes the plaintext with one write. Plain Read and Write on
// *net.TCPConn, never io.Copy between two TCP connections, which would
// splice and skip the copy through userland that an encrypting tunnel
// cannot skip.
//
// The key is 16 random bytes, hex, in FLOORRELAY_KEY, shared by the two
// processes (it is a benchmark). Nonces never repeat under it: the front
// numbers its connections and sends the number to the back first, and a
// nonce is that number, the direction and the record's count.
//
// Usage: floorrelay -mode front|back -listen ADDR -to ADDR [-addr-file FILE]
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync/atomic"
)

const (
	lenSize  = 4
	maxPlain = 64 << 10
	tagSize  = 16
)

func main() {
	mode := flag.String("mode", "", "front (clients connect; it dials -to, the back, with sealed records) or back (fronts connect; it dials -to, the server, in the clear)")
	listen := flag.String("listen", "127.0.0.1:0", "address to accept connections on")
	to := flag.String("to", "", "address to dial for each accepted connection")
	addrFile := flag.String("addr-file", "", "file to write the address listened on to, once listening (for -listen with port 0)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("floorrelay: ")
	if (*mode != "front" && *mode != "back") || *to == "" {
		log.Fatal("-mode front|back and -to are required")
	}
	aead, err := newAEAD(os.Getenv("FLOORRELAY_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		// Written whole, then renamed, so that a reader never sees part of it.
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o600); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Fatal(serve(ln.(*net.TCPListener), *to, *mode == "front", aead))
}

// newAEAD is AES-128-GCM with the key in hex.
func newAEAD(hexKey string) (cipher.AEAD, error) {
	key, err := hex.DecodeString(hexKey)
	if err != nil || len(key) != 16 {
		return nil, errors.New("FLOORRELAY_KEY must be 16 bytes in hex")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// serve relays each connection ln accepts to a connection of its own to
// to: as the front (clients in the clear, the back sealed) or the back
// (fronts sealed, the server in the clear).
func serve(ln *net.TCPListener, to string, front bool, aead cipher.AEAD) error {
	var conns atomic.Uint32
	for {
		in, err := ln.AcceptTCP()
		if err != nil {
			return err
		}
		go func() {
			defer in.Close()
			c, err := net.Dial("tcp", to)
			if err != nil {
				log.Print(err)
				return
			}
			out := c.(*net.TCPConn)
			defer out.Close()
			plain, sealed := in, out
			if !front {
				plain, sealed = out, in
			}
			// The connection's number, for its nonces: the front's count,
			// sent to the back first.
			var id [4]byte
			if front {
				binary.BigEndian.PutUint32(id[:], conns.Add(1))
				_, err = sealed.Write(id[:])
			} else {
				_, err = io.ReadFull(sealed, id[:])
			}
			if err != nil {
				log.Print(err)
				return
			}
			relay(plain, sealed, aead, id, front)
		}()
	}
}

// relay seals what plain sends onto sealed and opens what sealed sends
// onto plain until both directions end. An end of stream is passed on as
// a half close; an error closes both connections, which ends the other
// direction too.
func relay(plain, sealed *net.TCPConn, aead cipher.AEAD, id [4]byte, front bool) {
	// Direction 0 is sealed by the front, 1 by the back.
	var sealDir, openDir byte = 0, 1
	if !front {
		sealDir, openDir = 1, 0
	}
	end := func(err error, half *net.TCPConn) {
		if err != nil {
			_ = plain.Close()
			_ = sealed.Close()
			return
		}
		_ = half.CloseWrite()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		end(seal(sealed, plain, aead, newNonce(id, sealDir)), sealed)
	}()
	end(open(plain, sealed, aead, newNonce(id, openDir)), plain)
	<-done
}

// nonce is a record's GCM nonce: the connection's number, the direction
// and the count of records sealed so far in that direction.
type nonce [12]byte

func newNonce(id [4]byte, dir byte) *nonce {
	var n nonce
	copy(n[:4], id[:])
	n[4] = dir
	return &n
}

// next counts a record (the count takes the last 7 bytes).
func (n *nonce) next() {
	binary.BigEndian.PutUint64(n[4:], binary.BigEndian.Uint64(n[4:])+1)
}

// seal reads src into a buffer and writes each read as one record to dst:
// one read, one AES-GCM pass in place, one write. nil at src's end.
func seal(dst, src *net.TCPConn, aead cipher.AEAD, n *nonce) error {
	buf := make([]byte, lenSize+maxPlain+tagSize)
	for {
		k, err := src.Read(buf[lenSize : lenSize+maxPlain])
		if k > 0 {
			rec := aead.Seal(buf[lenSize:lenSize], n[:], buf[lenSize:lenSize+k], nil)
			n.next()
			binary.BigEndian.PutUint32(buf, uint32(len(rec)))
			if _, werr := dst.Write(buf[:lenSize+len(rec)]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// open reads records from src (the length, then the record), opens each
// in place and writes its plaintext to dst with one write. nil when src
// ends between records.
func open(dst, src *net.TCPConn, aead cipher.AEAD, n *nonce) error {
	buf := make([]byte, lenSize+maxPlain+tagSize)
	for {
		if _, err := io.ReadFull(src, buf[:lenSize]); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		size := binary.BigEndian.Uint32(buf)
		if size < tagSize || size > maxPlain+tagSize {
			return fmt.Errorf("record of %d bytes", size)
		}
		rec := buf[lenSize : lenSize+size]
		if _, err := io.ReadFull(src, rec); err != nil {
			return err
		}
		p, err := aead.Open(rec[:0], n[:], rec, nil)
		if err != nil {
			return err
		}
		n.next()
		if _, err := dst.Write(p); err != nil {
			return err
		}
	}
}
