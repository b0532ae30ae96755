package gate

// Real redis-server and PostgreSQL for the gate tests, started once per
// package on loopback in temp dirs (as the postgres system user when the
// tests run as root: initdb and postgres refuse root) and stopped by
// TestMain.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	redisPassword = "redis-Secret-7f3a"
	pgUser        = "gate"
	pgPassword    = "pg-Secret-91cd"
	pgDB          = "postgres"
	readyTimeout  = 60 * time.Second
	stopTimeout   = 15 * time.Second
)

var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupMu.Lock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanupMu.Unlock()
	os.Exit(code)
}

func atExit(f func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, f)
	cleanupMu.Unlock()
}

// server is a process started by the tests.
type server struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exited
	log  *lineLog
}

// lineLog keeps the last lines a server printed (for failure messages) and
// signals when a line contains the ready marker.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	if len(l.lines) > 30 {
		l.lines = l.lines[len(l.lines)-30:]
	}
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// serviceUser is the credential servers run as: the postgres system user
// when we are root, else nil (ourselves).
func serviceUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres system user (Debian package postgresql): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// serviceDir is a temp dir owned by the service user.
func serviceDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	atExit(func() { os.RemoveAll(dir) })
	cred, err := serviceUser()
	if err != nil || cred == nil {
		return dir, err
	}
	return dir, os.Chown(dir, int(cred.Uid), int(cred.Gid))
}

func chownTree(dir string) error {
	cred, err := serviceUser()
	if err != nil || cred == nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	})
}

// freePort is a loopback port nobody listened on a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs argv as the service user and waits (bounded) until it
// prints a line containing ready.
func startServer(name string, argv []string, dir, ready string) (*server, error) {
	cred, err := serviceUser()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, done: make(chan struct{}), log: &lineLog{}}
	readyCh := make(chan struct{})
	go func() {
		var once sync.Once
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.log.add(sc.Text())
			if strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(readyCh) })
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	atExit(s.stop)
	select {
	case <-readyCh:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s exited before it was ready: %v\n%s", name, cmd.ProcessState, s.log)
	case <-time.After(readyTimeout):
		s.stop()
		return nil, fmt.Errorf("%s not ready within %v:\n%s", name, readyTimeout, s.log)
	}
}

// stop ends the server (SIGTERM, then SIGKILL after stopTimeout) and waits
// for it; stopping twice is fine.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(stopTimeout):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// ---- redis ----

func redisBinary() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/redis-server"); serr == nil {
			return "/usr/bin/redis-server", nil
		}
		return "", errors.New("redis-server not found: install the Debian package redis-server")
	}
	return p, nil
}

// startRedis starts a redis-server on a free loopback port (password ""
// for none) and returns it with its address.
func startRedis(t testing.TB, password string) (*server, string) {
	t.Helper()
	s, addr, err := launchRedis(password)
	if err != nil {
		t.Fatal(err)
	}
	return s, addr
}

func launchRedis(password string) (*server, string, error) {
	bin, err := redisBinary()
	if err != nil {
		return nil, "", err
	}
	dir, err := serviceDir("gate-redis-")
	if err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	argv := []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--logfile", ""}
	if password != "" {
		argv = append(argv, "--requirepass", password)
	}
	s, err := startServer("redis-server", argv, dir, "Ready to accept connections")
	if err != nil {
		return nil, "", err
	}
	return s, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

var (
	sharedRedisOnce sync.Once
	sharedRedisAddr string
	sharedRedisErr  error
)

// sharedRedis is the package's redis-server (with redisPassword).
func sharedRedis(t testing.TB) string {
	t.Helper()
	sharedRedisOnce.Do(func() { _, sharedRedisAddr, sharedRedisErr = launchRedis(redisPassword) })
	if sharedRedisErr != nil {
		t.Fatal(sharedRedisErr)
	}
	return sharedRedisAddr
}

// ---- postgres ----

func postgresBinDir() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		return "", errors.New("PostgreSQL not found under /usr/lib/postgresql/*/bin: install the Debian package postgresql")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

var (
	sharedPGOnce sync.Once
	sharedPGPort int
	sharedPGErr  error
)

// sharedPostgres is the package's PostgreSQL: superuser pgUser with
// pgPassword (scram-sha-256 over TCP) on 127.0.0.1; it returns the port.
func sharedPostgres(t testing.TB) int {
	t.Helper()
	sharedPGOnce.Do(func() { sharedPGPort, sharedPGErr = startPostgres() })
	if sharedPGErr != nil {
		t.Fatal(sharedPGErr)
	}
	return sharedPGPort
}

func startPostgres() (int, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return 0, err
	}
	base, err := serviceDir("gate-pg-")
	if err != nil {
		return 0, err
	}
	data, sock, pwfile := filepath.Join(base, "data"), filepath.Join(base, "sock"), filepath.Join(base, "pw")
	if err := os.Mkdir(sock, 0o700); err != nil {
		return 0, err
	}
	if err := os.WriteFile(pwfile, []byte(pgPassword+"\n"), 0o600); err != nil {
		return 0, err
	}
	if err := chownTree(base); err != nil {
		return 0, err
	}
	cred, err := serviceUser()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", pgUser, "--pwfile", pwfile,
		"--auth-local", "trust", "--auth-host", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
	initdb.Dir = base
	initdb.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + base}
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out bytes.Buffer
	initdb.Stdout, initdb.Stderr = &out, &out
	if err := initdb.Run(); err != nil {
		return 0, fmt.Errorf("initdb: %v\n%s", err, out.String())
	}
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	_, err = startServer("postgres", []string{filepath.Join(bin, "postgres"), "-D", data, "-k", sock, "-h", "127.0.0.1",
		"-p", strconv.Itoa(port), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=20", "-c", "logging_collector=off"},
		base, "database system is ready to accept connections")
	return port, err
}
