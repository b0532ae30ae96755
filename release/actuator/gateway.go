package actuator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrFenced: the call's epoch is lower than an epoch already accepted for its
// domain (or than the authority's current epoch): a superseded controller.
// The target was not touched. The error is a *FencedError naming both epochs.
var ErrFenced = errors.New("actuator: fenced")

// ErrStateDamaged: the fence state file cannot be read as written by a
// gateway. The gateway refuses every call rather than forget the epochs it
// accepted; an operator must restore or inspect the file.
var ErrStateDamaged = errors.New("actuator: fence state damaged")

// FencedError names the refused epoch and the epoch that fences it.
type FencedError struct {
	Domain  string
	Epoch   uint64 // the call's epoch
	Current uint64 // the highest epoch accepted (or the authority's current one)
	By      string // "state" (the gateway's state file) or "authority" (the EpochSource)
}

func (e *FencedError) Error() string {
	if e.By == "authority" {
		return fmt.Sprintf("actuator: fenced: epoch %d of %q is not the authority's current epoch %d", e.Epoch, e.Domain, e.Current)
	}
	return fmt.Sprintf("actuator: fenced: epoch %d of %q is lower than epoch %d this gateway already accepted", e.Epoch, e.Domain, e.Current)
}

// Unwrap makes errors.Is(err, ErrFenced) hold.
func (e *FencedError) Unwrap() error { return ErrFenced }

// EpochSource answers a domain's current lease epoch (the authority; the
// lead wires client.GetDomain(...).GetEpoch()).
type EpochSource interface {
	CurrentEpoch(ctx context.Context, domain string) (uint64, error)
}

// EpochSourceFunc adapts a function.
type EpochSourceFunc func(ctx context.Context, domain string) (uint64, error)

// CurrentEpoch calls f.
func (f EpochSourceFunc) CurrentEpoch(ctx context.Context, domain string) (uint64, error) {
	return f(ctx, domain)
}

// Limits of the state file.
const (
	MaxStateBytes   = 1 << 20
	MaxStateDomains = 4096
	stateFormat     = "aerodb-actuator-fence/1"
)

// GatewayConfig configures a fenced gateway.
type GatewayConfig struct {
	// StatePath: the fence state file, one per target (beside it,
	// StatePath+".lock" and StatePath+".tmp"). Required.
	StatePath string
	// Target: the actuator behind the fence. Required.
	Target Actuator
	// Epochs: optional per-call check with the authority. When set, a call
	// whose epoch is not the domain's current epoch is refused, and a higher
	// current epoch is stored. An error from it refuses the call.
	Epochs EpochSource
	// DefaultTimeout bounds a call whose context has no deadline (10s when 0).
	DefaultTimeout time.Duration
}

// Gateway is an Actuator that fences Target by epoch. Calls are serialized:
// within the process by a semaphore, across processes sharing the state file
// by an exclusive flock held from the epoch check through the target's call.
type Gateway struct {
	cfg GatewayConfig
	sem chan struct{}
}

// NewGateway checks the config and the state file (a damaged file is refused).
func NewGateway(cfg GatewayConfig) (*Gateway, error) {
	if cfg.StatePath == "" {
		return nil, errors.New("actuator: gateway: StatePath is required")
	}
	if cfg.Target == nil {
		return nil, errors.New("actuator: gateway: Target is required")
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = 10 * time.Second
	}
	if _, err := readState(cfg.StatePath); err != nil {
		return nil, err
	}
	return &Gateway{cfg: cfg, sem: make(chan struct{}, 1)}, nil
}

// Accepted returns the highest epoch the state file holds for domain (0: none).
func (g *Gateway) Accepted(domain string) (uint64, error) {
	st, err := readState(g.cfg.StatePath)
	if err != nil {
		return 0, err
	}
	return st[domain], nil
}

// SetWeight validates c, takes the locks, refuses c when its epoch is lower
// than the stored one (or, with Epochs, not the current one), stores a
// higher epoch durably, and only then calls the target, still holding the
// locks, so no call with a lower epoch can reach the target afterwards.
func (g *Gateway) SetWeight(ctx context.Context, c Call) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.cfg.DefaultTimeout)
		defer cancel()
	}
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("actuator: waiting for the gateway: %w", ctx.Err())
	}
	defer func() { <-g.sem }()
	unlock, err := lockFile(ctx, g.cfg.StatePath+".lock")
	if err != nil {
		return err
	}
	defer unlock()

	st, err := readState(g.cfg.StatePath)
	if err != nil {
		return err
	}
	stored := st[c.Domain]
	if c.Epoch < stored {
		return &FencedError{Domain: c.Domain, Epoch: c.Epoch, Current: stored, By: "state"}
	}
	next := max(stored, c.Epoch)
	if g.cfg.Epochs != nil {
		cur, err := g.cfg.Epochs.CurrentEpoch(ctx, c.Domain)
		if err != nil {
			return fmt.Errorf("actuator: asking the authority for the epoch of %q (refusing): %w", c.Domain, err)
		}
		if cur != c.Epoch {
			// The authority's epoch is monotone: store a higher one, so this
			// gateway fences the superseded epoch even without the authority
			// later. Never store the refused call's own epoch (a call from a
			// "future" epoch the authority does not know fences nobody).
			if cur > stored && (len(st) < MaxStateDomains || stored != 0) {
				st[c.Domain] = cur
				if err := writeState(g.cfg.StatePath, st); err != nil {
					return err
				}
			}
			return &FencedError{Domain: c.Domain, Epoch: c.Epoch, Current: cur, By: "authority"}
		}
	}
	if next != stored {
		if _, ok := st[c.Domain]; !ok && len(st) >= MaxStateDomains {
			return fmt.Errorf("actuator: the state file already holds %d domains (at most %d)", len(st), MaxStateDomains)
		}
		st[c.Domain] = next
		if err := writeState(g.cfg.StatePath, st); err != nil {
			return err
		}
	}
	return g.cfg.Target.SetWeight(ctx, c)
}

// lockFile takes an exclusive flock on path, polling (bounded by ctx): a
// blocking flock cannot be cancelled.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("actuator: open lock: %w", err)
	}
	wait := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("actuator: lock %s: %w", path, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			_ = f.Close()
			return nil, fmt.Errorf("actuator: waiting for lock %s: %w", path, ctx.Err())
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

type stateFile struct {
	Format string            `json:"format"`
	Epochs map[string]uint64 `json:"epochs"`
	SHA256 string            `json:"sha256"`
}

func epochsDigest(m map[string]uint64) (string, error) {
	b, err := json.Marshal(m) // keys sorted: canonical
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// readState reads the state (empty when the file does not exist). Anything
// not exactly as a gateway writes it is ErrStateDamaged: never reset.
func readState(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]uint64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("actuator: open fence state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("actuator: read fence state: %w", err)
	}
	damaged := func(why string) error {
		return fmt.Errorf("%w: %s: %s (refusing every call; restore the file, never delete it while a controller runs)", ErrStateDamaged, path, why)
	}
	if len(b) > MaxStateBytes {
		return nil, damaged(fmt.Sprintf("larger than %d bytes", MaxStateBytes))
	}
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, damaged("not the gateway's JSON")
	}
	if dec.More() {
		return nil, damaged("trailing data")
	}
	if st.Format != stateFormat {
		return nil, damaged("unknown format")
	}
	if st.Epochs == nil {
		return nil, damaged("no epochs")
	}
	if len(st.Epochs) > MaxStateDomains {
		return nil, damaged(fmt.Sprintf("more than %d domains", MaxStateDomains))
	}
	for d, e := range st.Epochs {
		if checkName(d) != nil || e == 0 {
			return nil, damaged("an invalid domain or epoch 0")
		}
	}
	want, err := epochsDigest(st.Epochs)
	if err != nil || want != st.SHA256 {
		return nil, damaged("checksum mismatch")
	}
	return st.Epochs, nil
}

// writeState writes a temporary file, fsyncs it, renames it over path and
// fsyncs the directory.
func writeState(path string, m map[string]uint64) error {
	sum, err := epochsDigest(m)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(stateFile{Format: stateFormat, Epochs: m, SHA256: sum}, "", " ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if len(b) > MaxStateBytes {
		return fmt.Errorf("actuator: fence state would exceed %d bytes", MaxStateBytes)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("actuator: write fence state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("actuator: write fence state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("actuator: fsync fence state: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("actuator: rename fence state: %w", err)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("actuator: fsync fence state directory: %w", err)
	}
	return nil
}
