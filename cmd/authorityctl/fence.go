package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
)

// errFencedOut: the epoch is no longer current (exit 1).
var errFencedOut = errors.New("fenced")

// newFenceCmd: the deploy target's side of fencing (docs/DEPLOY.md).
func newFenceCmd(o *options) *cobra.Command {
	var (
		domain, state string
		epoch         nonZeroUint64
		offline       bool
	)
	cmd := &cobra.Command{
		Use:   "fence --domain D --epoch N [--state FILE] [--offline]",
		Short: "Exit non-zero when epoch N of a deploy lock is no longer current",
		Long: `Checks a deploy step's epoch (AUTHORITY_EPOCH) before it changes a target.

Without --state it asks the authority: exit 0 when N is the domain's current
epoch, 1 when it moved on. That narrows the window a paused runner has but
cannot close it: the answer can be stale by the time the step acts.

With --state FILE (on the target, one per target), it also keeps the highest
epoch the target accepted, under an exclusive lock: N lower than the stored
epoch is refused (exit 1), N higher is stored (written to a temporary file,
fsynced, renamed). A target whose every change goes through this check
refuses a superseded runner's late steps however late they arrive: that
closes the window. --offline skips the authority (the state file alone).`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkNames("domain", domain); err != nil {
				return err
			}
			if state == "" && offline {
				return usagef("--offline needs --state FILE")
			}
			if state != "" {
				if err := fenceState(state, uint64(epoch)); err != nil {
					return err
				}
			}
			if offline {
				return nil
			}
			d, err := fetchDomain(cmd.Context(), o, domain)
			if err != nil {
				return err
			}
			if d.GetEpoch() != uint64(epoch) {
				return fmt.Errorf("%w: epoch %d of %q is no longer current (now %d, held by %s)", errFencedOut, uint64(epoch), domain,
					d.GetEpoch(), orDash(d.GetHolder()))
			}
			o.progressf("epoch %d of %q is current", uint64(epoch), domain)
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&domain, "domain", "", "the deploy lock")
	fs.Var(&epoch, "epoch", "the epoch the step runs under (AUTHORITY_EPOCH)")
	fs.StringVar(&state, "state", "", "target-side file keeping the highest accepted epoch")
	fs.BoolVar(&offline, "offline", false, "check the state file only")
	markRequired(cmd, "domain", "epoch")
	return cmd
}

// fenceState refuses epoch when the state file holds a higher one, and
// stores it when it is higher, under an exclusive flock of FILE.lock.
func fenceState(path string, epoch uint64) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", path+".lock", err)
	}
	stored, err := readEpochFile(path)
	if err != nil {
		return err
	}
	switch {
	case epoch < stored:
		return fmt.Errorf("%w: epoch %d is lower than epoch %d this target already accepted (%s)", errFencedOut, epoch, stored, path)
	case epoch == stored:
		return nil
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%d\n", epoch); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// readEpochFile reads the stored epoch (0 when the file does not exist).
// The file is small by construction: anything else is refused.
func readEpochFile(path string) (uint64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("fence state %s is damaged (want one decimal epoch): refusing", path)
	}
	return n, nil
}
