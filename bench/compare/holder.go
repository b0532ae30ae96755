package compare

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/tlsfiles"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// The takeover row's holder runs in its own process (so that it can be
// SIGSTOPped): the test binary re-executed with these environment variables
// set; TestMain calls RunHolder.
const (
	holderEnv    = "COMPARE_HOLDER"    // "etcd" or "ours"
	endpointsEnv = "COMPARE_ENDPOINTS" // comma-separated
	lockEnv      = "COMPARE_LOCK"      // etcd lock prefix or our domain
	caEnv        = "COMPARE_TLS_CA"    // TLS runs: the holder's certificate files
	certEnv      = "COMPARE_TLS_CERT"
	keyEnv       = "COMPARE_TLS_KEY"
	holderName   = "stopped-holder" // ours: the holder (and its node identity)
	heldLine     = "held"
)

// HolderMode reports whether this process is a holder child.
func HolderMode() bool { return os.Getenv(holderEnv) != "" }

// RunHolder takes the lock, prints heldLine, keeps the lease alive until
// killed (it never returns on success).
func RunHolder() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eps, lock := strings.Split(os.Getenv(endpointsEnv), ","), os.Getenv(lockEnv)
	var files *tlsfiles.Files
	if os.Getenv(caEnv) != "" {
		files = &tlsfiles.Files{CA: os.Getenv(caEnv), Cert: os.Getenv(certEnv), Key: os.Getenv(keyEnv)}
	}
	switch os.Getenv(holderEnv) {
	case "etcd":
		var tc *tls.Config
		if files != nil {
			var err error
			if tc, err = clientTLS(*files); err != nil {
				return err
			}
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: tc})
		if err != nil {
			return err
		}
		s, err := concurrency.NewSession(c, concurrency.WithTTL(2))
		if err != nil {
			return err
		}
		if err := concurrency.NewMutex(s, lock).Lock(ctx); err != nil {
			return err
		}
	case "ours":
		cfg := client.Config{Endpoints: eps}
		if files != nil {
			src, err := tlsfiles.Load(*files, tlsfiles.Options{})
			if err != nil {
				return err
			}
			cfg.Credentials = src.Credentials(true)
		}
		c, err := client.DialConfig(ctx, cfg)
		if err != nil {
			return err
		}
		if _, err := c.Acquire(ctx, lock, holderName); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s=%q", holderEnv, os.Getenv(holderEnv))
	}
	fmt.Println(heldLine)
	select {}
}

// holderProc is a running holder child.
type holderProc struct{ cmd *exec.Cmd }

// startHolder starts a holder child (with files' certificate in a TLS
// run, else nil) and waits (30 s at most) until it holds the lock.
func startHolder(tb testing.TB, system string, endpoints []string, lock string, files *tlsfiles.Files) *holderProc {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+system, endpointsEnv+"="+strings.Join(endpoints, ","), lockEnv+"="+lock)
	if files != nil {
		cmd.Env = append(cmd.Env, caEnv+"="+files.CA, certEnv+"="+files.Cert, keyEnv+"="+files.Key)
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlives the test process
	out, err := cmd.StdoutPipe()
	must(tb, err)
	must(tb, cmd.Start())
	h := &holderProc{cmd: cmd}
	tb.Cleanup(h.kill)
	held := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != heldLine {
			err = fmt.Errorf("holder printed %q", line)
		}
		held <- err
		io.Copy(io.Discard, out)
	}()
	select {
	case err := <-held:
		if err != nil {
			tb.Fatalf("%s holder: %v", system, err)
		}
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s holder did not take the lock within 30 s", system)
	}
	return h
}

func (h *holderProc) stop() { h.cmd.Process.Signal(syscall.SIGSTOP) }

func (h *holderProc) kill() {
	if h.cmd.ProcessState != nil {
		return
	}
	h.cmd.Process.Signal(syscall.SIGCONT)
	h.cmd.Process.Kill()
	h.cmd.Wait()
}
