package actuator

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// HAProxyConfig configures the HAProxy actuator: two servers of one backend
// (balance roundrobin or another dynamic algorithm: static ones accept only
// weights 0% and 100%), driven through the runtime API on the stats socket
// (`stats socket PATH level admin`).
type HAProxyConfig struct {
	Socket  string // the stats socket's path (unix socket)
	Backend string
	Stable  string // the stable server's name in Backend
	Canary  string // the canary server's name in Backend
	// Total: the weight the two servers share (canary gets Weight% of it,
	// rounded; stable the rest). 100 when 0; at most 256 (HAProxy's maximum).
	Total uint32
	// Timeout bounds one runtime API command (dial, write, read): 2s when 0.
	Timeout time.Duration
}

// HAProxy sets server weights through HAProxy's runtime API.
type HAProxy struct {
	cfg HAProxyConfig
}

// Bounds on runtime API answers.
const (
	maxAnswer      = 64 << 10
	maxStateAnswer = 1 << 20
)

// ErrHAProxy: the runtime API refused a command or answered unexpectedly.
var ErrHAProxy = errors.New("actuator: haproxy")

// NewHAProxy checks the config (names are spliced into runtime API commands,
// so they are restricted to [A-Za-z0-9._:-]).
func NewHAProxy(cfg HAProxyConfig) (*HAProxy, error) {
	if cfg.Socket == "" {
		return nil, errors.New("actuator: haproxy: Socket is required")
	}
	for _, f := range []struct{ name, v string }{{"Backend", cfg.Backend}, {"Stable", cfg.Stable}, {"Canary", cfg.Canary}} {
		if err := checkName(f.v); err != nil || strings.Contains(f.v, "/") {
			return nil, fmt.Errorf("actuator: haproxy: %s %q must be 1..%d bytes of [A-Za-z0-9._:-]", f.name, truncate([]byte(f.v), 64), MaxDomainLen)
		}
	}
	if cfg.Stable == cfg.Canary {
		return nil, errors.New("actuator: haproxy: Stable and Canary must be different servers")
	}
	if cfg.Total == 0 {
		cfg.Total = 100
	}
	if cfg.Total > 256 {
		return nil, fmt.Errorf("actuator: haproxy: Total %d exceeds 256", cfg.Total)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	return &HAProxy{cfg: cfg}, nil
}

// Split returns the server weights for a canary weight in percent.
func (h *HAProxy) Split(weight uint32) (stable, canary uint32) {
	canary = (weight*h.cfg.Total + 50) / 100
	return h.cfg.Total - canary, canary
}

// SetWeight sets both servers' weights and reads them back. The order keeps
// the two servers' sum from dropping below min(old, new) in between: the
// server that gains weight is set first.
func (h *HAProxy) SetWeight(ctx context.Context, c Call) error {
	if err := c.Validate(); err != nil {
		return err
	}
	stable, canary := h.Split(c.Weight)
	_, curCanary, err := h.Weights(ctx)
	if err != nil {
		return err
	}
	steps := []struct {
		server string
		w      uint32
	}{{h.cfg.Stable, stable}, {h.cfg.Canary, canary}}
	if canary > curCanary {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, s := range steps {
		out, err := h.Command(ctx, fmt.Sprintf("set weight %s/%s %d", h.cfg.Backend, s.server, s.w), maxAnswer)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(out)) != 0 {
			return fmt.Errorf("%w: set weight %s/%s %d: %q", ErrHAProxy, h.cfg.Backend, s.server, s.w, truncate(bytes.TrimSpace(out), 256))
		}
	}
	gs, gc, err := h.Weights(ctx)
	if err != nil {
		return err
	}
	if gs != stable || gc != canary {
		return fmt.Errorf("%w: read back weights stable=%d canary=%d, want %d/%d", ErrHAProxy, gs, gc, stable, canary)
	}
	return nil
}

// Weights reads the two servers' current weights (`get weight`).
func (h *HAProxy) Weights(ctx context.Context) (stable, canary uint32, err error) {
	if stable, err = h.getWeight(ctx, h.cfg.Stable); err != nil {
		return 0, 0, err
	}
	if canary, err = h.getWeight(ctx, h.cfg.Canary); err != nil {
		return 0, 0, err
	}
	return stable, canary, nil
}

func (h *HAProxy) getWeight(ctx context.Context, server string) (uint32, error) {
	cmd := fmt.Sprintf("get weight %s/%s", h.cfg.Backend, server)
	out, err := h.Command(ctx, cmd, maxAnswer)
	if err != nil {
		return 0, err
	}
	// "50 (initial 1)"
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return 0, fmt.Errorf("%w: %s: empty answer", ErrHAProxy, cmd)
	}
	w, perr := strconv.ParseUint(f[0], 10, 32)
	if perr != nil || w > 256 {
		return 0, fmt.Errorf("%w: %s: %q", ErrHAProxy, cmd, truncate(bytes.TrimSpace(out), 256))
	}
	return uint32(w), nil
}

// ServerState is one row of `show servers state`.
type ServerState struct {
	Name          string
	Address       string
	OpState       int // 0 stopped, 1 starting, 2 running, 3 stopping
	AdminState    int
	UserWeight    uint32
	InitialWeight uint32
}

// ServersState reads the backend's servers (`show servers state BACKEND`).
func (h *HAProxy) ServersState(ctx context.Context) ([]ServerState, error) {
	cmd := "show servers state " + h.cfg.Backend
	out, err := h.Command(ctx, cmd, maxStateAnswer)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), maxStateAnswer)
	var (
		cols []string
		rows []ServerState
	)
	for line := 0; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		switch {
		case t == "":
			continue
		case line == 0:
			if t != "1" {
				return nil, fmt.Errorf("%w: %s: unknown format %q", ErrHAProxy, cmd, truncate([]byte(t), 256))
			}
			continue
		case strings.HasPrefix(t, "#"):
			cols = strings.Fields(strings.TrimPrefix(t, "#"))
			continue
		}
		if cols == nil {
			return nil, fmt.Errorf("%w: %s: %q", ErrHAProxy, cmd, truncate([]byte(t), 256))
		}
		f := strings.Fields(t)
		get := func(name string) string {
			for i, c := range cols {
				if c == name && i < len(f) {
					return f[i]
				}
			}
			return ""
		}
		num := func(name string) int {
			n, _ := strconv.Atoi(get(name))
			return n
		}
		rows = append(rows, ServerState{
			Name: get("srv_name"), Address: get("srv_addr"),
			OpState: num("srv_op_state"), AdminState: num("srv_admin_state"),
			UserWeight: uint32(num("srv_uweight")), InitialWeight: uint32(num("srv_iweight")),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrHAProxy, cmd, err)
	}
	if cols == nil {
		return nil, fmt.Errorf("%w: %s: %q", ErrHAProxy, cmd, truncate(bytes.TrimSpace(out), 256))
	}
	return rows, nil
}

// Check confirms the backend holds both servers.
func (h *HAProxy) Check(ctx context.Context) error {
	rows, err := h.ServersState(ctx)
	if err != nil {
		return err
	}
	seen := 0
	for _, r := range rows {
		if r.Name == h.cfg.Stable || r.Name == h.cfg.Canary {
			seen++
		}
	}
	if seen != 2 {
		return fmt.Errorf("%w: backend %s lacks server %s or %s", ErrHAProxy, h.cfg.Backend, h.cfg.Stable, h.cfg.Canary)
	}
	return nil
}

// Command sends one runtime API command (non-interactive: HAProxy answers
// and closes) and returns at most limit bytes of the answer (more is an
// error). Bounded by ctx and the configured timeout.
func (h *HAProxy) Command(ctx context.Context, cmd string, limit int) ([]byte, error) {
	if strings.ContainsAny(cmd, "\n\r;") {
		return nil, fmt.Errorf("%w: refusing a command holding a newline or ';'", ErrHAProxy)
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", h.cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %v", ErrHAProxy, h.cfg.Socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return nil, fmt.Errorf("%w: %s: write: %v", ErrHAProxy, cmd, err)
	}
	out, err := io.ReadAll(io.LimitReader(conn, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: read: %v", ErrHAProxy, cmd, err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%w: %s: answer exceeds %d bytes", ErrHAProxy, cmd, limit)
	}
	return out, nil
}
