package actuator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ScriptConfig configures the script actuator: Argv is run directly (no
// shell) with an environment of Env plus AUTHORITY_DOMAIN, AUTHORITY_EPOCH,
// AUTHORITY_CANARY and AUTHORITY_WEIGHT; exit 0 is success.
type ScriptConfig struct {
	Argv []string
	Env  []string // KEY=VALUE, e.g. PATH=/usr/bin:/bin; the parent's environment is not passed
	Dir  string
	// Timeout: the run is killed (its whole process group) after it; 30s when 0.
	Timeout time.Duration
}

// Bounds of the script actuator.
const (
	maxArgv       = 64
	maxArgBytes   = 4096
	maxScriptTail = 2048 // bytes of output quoted in an error
)

// ErrScript: the script failed, or was killed at its timeout.
var ErrScript = errors.New("actuator: script")

// Script runs a command per call.
type Script struct{ cfg ScriptConfig }

// NewScript checks the config.
func NewScript(cfg ScriptConfig) (*Script, error) {
	if len(cfg.Argv) == 0 || cfg.Argv[0] == "" {
		return nil, errors.New("actuator: script: Argv is required")
	}
	if len(cfg.Argv) > maxArgv || len(cfg.Env) > maxArgv {
		return nil, fmt.Errorf("actuator: script: at most %d arguments and %d environment entries", maxArgv, maxArgv)
	}
	for _, a := range append(append([]string(nil), cfg.Argv...), cfg.Env...) {
		if len(a) > maxArgBytes || strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("actuator: script: an argument or environment entry is over %d bytes or holds NUL", maxArgBytes)
		}
	}
	for _, e := range cfg.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.HasPrefix(k, "AUTHORITY_") {
			return nil, errors.New("actuator: script: Env entries are KEY=VALUE and may not set AUTHORITY_*")
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &Script{cfg: cfg}, nil
}

// tailBuffer keeps the last n bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	n   int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.n:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(bytes.TrimSpace(t.buf), []byte("?")))
}

// SetWeight runs the script for c.
func (s *Script) SetWeight(ctx context.Context, c Call) error {
	if err := c.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.cfg.Argv[0], s.cfg.Argv[1:]...)
	cmd.Dir = s.cfg.Dir
	cmd.Env = append(append([]string(nil), s.cfg.Env...),
		"AUTHORITY_DOMAIN="+c.Domain,
		"AUTHORITY_EPOCH="+strconv.FormatUint(c.Epoch, 10),
		"AUTHORITY_CANARY="+c.Canary,
		"AUTHORITY_WEIGHT="+strconv.FormatUint(uint64(c.Weight), 10))
	out := &tailBuffer{n: maxScriptTail}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a script's children die with it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second // pipes held by an escaped grandchild cannot stall Wait
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftovers of a successful run too
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %s killed after %v: %v (output tail: %q)", ErrScript, s.cfg.Argv[0], s.cfg.Timeout, ctx.Err(), out.String())
		}
		return fmt.Errorf("%w: %s: %v (output tail: %q)", ErrScript, s.cfg.Argv[0], err, out.String())
	}
	return nil
}
