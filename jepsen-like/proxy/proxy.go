// Package proxy is a per-link TCP proxy for partitions without root: every
// raft link (one directed link per ordered pair of servers) dials its peer
// through one Proxy, whose mode decides what happens to the traffic:
//
//   - Pass forwards bytes (after Delay, when set);
//   - Hold stops forwarding but never drops a byte: nothing more is read
//     from either side, so unread bytes stay in the kernel's socket buffers
//     and flow again, in order, when the link passes again (or the peer
//     gives up and closes the connection);
//   - Reset closes every open connection and refuses new ones.
//
// Bytes are never dropped in the middle of a stream (a plaintext stream
// would be corrupted): a link either holds them or closes the connection.
package proxy

import (
	"io"
	"net"
	"sync"
	"time"
)

// Mode of a link.
type Mode int

// Modes.
const (
	Pass Mode = iota
	Hold
	Reset
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Hold:
		return "hold"
	case Reset:
		return "reset"
	}
	return "?"
}

// Proxy forwards connections accepted on Addr() to a target address.
type Proxy struct {
	Name   string
	target string
	ln     net.Listener

	mu      sync.Mutex
	cond    *sync.Cond
	mode    Mode
	delay   time.Duration
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
	Accepts int // connections accepted (under mu)
}

// Listen starts a proxy on a free loopback port forwarding to target.
func Listen(name, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Name: name, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetMode switches the link's mode; Reset closes every open connection.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	p.mode = m
	if m == Reset {
		for c := range p.conns {
			c.Close()
		}
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// SetDelay delays every forwarded chunk by d (0: none).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// AcceptCount returns how many connections the proxy accepted.
func (p *Proxy) AcceptCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Accepts
}

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode == Reset {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.Accepts++
		p.mu.Unlock()
		if !p.track(c) {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// wait blocks while the link holds; it reports false once the link resets
// or the proxy closes.
func (p *Proxy) wait() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.mode == Hold && !p.closed {
		p.cond.Wait()
	}
	return p.delay, !p.closed && p.mode != Reset
}

func (p *Proxy) serve(in net.Conn) {
	defer p.wg.Done()
	defer p.untrack(in)
	// A held link does not even dial its target until it passes again.
	if _, ok := p.wait(); !ok {
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return
	}
	if !p.track(out) {
		out.Close()
		return
	}
	defer p.untrack(out)
	done := make(chan struct{}, 2)
	go func() { p.pipe(out, in); done <- struct{}{} }()
	go func() { p.pipe(in, out); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	<-done
}

// pipe copies src to dst, waiting before every read while the link holds.
func (p *Proxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		delay, ok := p.wait()
		if !ok {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if delay > 0 {
				time.Sleep(delay)
			}
			// A hold that began during the read keeps these bytes here
			// (never dropped) until the link passes again.
			if _, ok := p.wait(); !ok {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
