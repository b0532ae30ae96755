package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/hashicorp/raft"
)

// Raft traffic between servers runs over this stream layer: mutual TLS 1.3
// (unless the server runs --insecure) with server certificates of the same
// CA, then a one-line handshake in which the dialler presents its cluster
// id and the acceptor answers with its own. A connection between servers of
// different clusters is closed before raft sees a byte, on both sides, so
// a server of another cluster can neither join nor take a server over.
const (
	raftPreamble      = "AUTHORITY-RAFT/1 "
	maxPreambleBytes  = 256
	handshakeDeadline = 10 * time.Second
)

// ErrOtherCluster: the peer belongs to another cluster.
var ErrOtherCluster = errors.New("raft peer belongs to another cluster")

type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tlsfiles.Source // nil: plaintext (--insecure)
	clusterID string
	reject    func(peer string, err error)
}

func newStreamLayer(bind string, src *tlsfiles.Source, clusterID string, reject func(string, error)) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	return &streamLayer{ln: ln, advertise: ln.Addr(), tls: src, clusterID: clusterID, reject: reject}, nil
}

func (l *streamLayer) Addr() net.Addr { return l.advertise }
func (l *streamLayer) Close() error   { return l.ln.Close() }

// Accept returns at once; the TLS and cluster-id handshakes run on the
// connection's first read, in raft's per-connection goroutine, so a slow
// or hostile peer cannot stall the accept loop.
func (l *streamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, err
	}
	if l.tls != nil {
		c = tls.Server(c, l.tls.ServerConfig(nil, requireServer, l.reject))
	}
	return &acceptedConn{Conn: c, layer: l}, nil
}

func requireServer(id identity.Identity) error {
	if id.Role != identity.Server {
		return fmt.Errorf("raft accepts only server identities, not %s", id)
	}
	return nil
}

// Dial connects to a peer's raft port and completes both handshakes.
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(min(timeout, handshakeDeadline)))
	if l.tls != nil {
		tc := tls.Client(c, l.tls.ClientConfig(""))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("raft TLS handshake with %s: %w", address, err)
		}
		c = tc
	}
	if _, err := lineWriter(c).WriteString(raftPreamble + l.clusterID + "\n"); err != nil {
		c.Close()
		return nil, err
	}
	line, err := readLine(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raft handshake with %s: %w", address, err)
	}
	if line != "OK "+l.clusterID {
		c.Close()
		return nil, fmt.Errorf("%w: %s answered %q (our cluster id %s)", ErrOtherCluster, address, clipLine(line), l.clusterID)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

type writerString struct{ net.Conn }

func (w writerString) WriteString(s string) (int, error) { return w.Conn.Write([]byte(s)) }

func lineWriter(c net.Conn) writerString { return writerString{c} }

// readLine reads one '\n'-terminated line of at most maxPreambleBytes, byte
// by byte so nothing after it is consumed.
func readLine(c net.Conn) (string, error) {
	var b strings.Builder
	one := make([]byte, 1)
	for b.Len() < maxPreambleBytes {
		if _, err := c.Read(one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
	return "", errors.New("handshake line too long")
}

func clipLine(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// acceptedConn runs the acceptor's handshakes before the first byte reaches
// raft.
type acceptedConn struct {
	net.Conn
	layer *streamLayer
	once  sync.Once
	err   error
}

func (a *acceptedConn) handshake() error {
	a.once.Do(func() {
		a.Conn.SetDeadline(time.Now().Add(handshakeDeadline))
		defer a.Conn.SetDeadline(time.Time{})
		if tc, ok := a.Conn.(*tls.Conn); ok {
			if err := tc.Handshake(); err != nil {
				a.err = err // the reject callback logged a refused certificate
				return
			}
		}
		line, err := readLine(a.Conn)
		if err != nil {
			a.err = fmt.Errorf("raft handshake from %s: %w", a.RemoteAddr(), err)
			return
		}
		theirs, ok := strings.CutPrefix(line, raftPreamble)
		if !ok || theirs != a.layer.clusterID {
			lineWriter(a.Conn).WriteString("REFUSED cluster " + a.layer.clusterID + "\n")
			a.err = fmt.Errorf("%w: raft connection from %s presents cluster id %q, ours is %s", ErrOtherCluster, a.RemoteAddr(), clipLine(theirs), a.layer.clusterID)
			if a.layer.reject != nil {
				a.layer.reject(a.RemoteAddr().String(), a.err)
			}
			return
		}
		_, a.err = lineWriter(a.Conn).WriteString("OK " + a.layer.clusterID + "\n")
	})
	return a.err
}

func (a *acceptedConn) Read(p []byte) (int, error) {
	if err := a.handshake(); err != nil {
		a.Conn.Close()
		return 0, err
	}
	return a.Conn.Read(p)
}

func (a *acceptedConn) Write(p []byte) (int, error) {
	if err := a.handshake(); err != nil {
		a.Conn.Close()
		return 0, err
	}
	return a.Conn.Write(p)
}
