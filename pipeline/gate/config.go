// Package gate runs a deploy's health gates: after the deploy command, every
// critical service must answer within its timeout, or the deploy is failed
// and a rollback alert goes to an Alertmanager-compatible webhook.
//
// A gate is one service with one check:
//
//   - http: a request (GET by default) whose status must be the expected
//     one (200 by default) and, optionally, an expr-lang condition over
//     {status, body, headers, latency_ms} must hold (body is the parsed
//     JSON when the response is JSON, else the text);
//   - postgres: readiness at the protocol level, like pg_isready: connect
//     with pgx (a DSN, or host/port/user/dbname) and run SELECT 1;
//   - redis: PING with go-redis must answer PONG;
//   - command: a smoke test (an argv, no shell) must exit 0; it runs in its
//     own process group, killed as a whole at its attempt timeout.
//
// Each service has a timeout (5 minutes by default, the most allowed), an
// attempt timeout, and retries with exponential backoff; services are
// checked concurrently. Passwords and secret headers come from environment
// variables named in the config, never from the config itself, and never
// appear in a result, report or alert. (The first Redis gate silences
// go-redis's process-wide log, which would repeat each failed dial on
// stderr.)
//
//	cfg, err := gate.Load("gates.yaml")
//	if err != nil { ... }                 // a config error, with its line
//	cfg.DeployID = id                      // optional overrides
//	rep := gate.Run(ctx, cfg)              // posts the alert on failure
//	if !rep.Passed { ... }
package gate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/jackc/pgx/v5"
	"golang.org/x/net/http/httpguts"
	"gopkg.in/yaml.v3"
)

// Limits on a config (it is untrusted input) and on what a check reads.
const (
	MaxConfigBytes     = 1 << 20
	MaxServices        = 256
	MaxRetries         = 100
	MaxConcurrency     = 64
	MaxHeaders         = 64
	MaxArgs            = 256
	MaxArgBytes        = 4096
	MaxConditionBytes  = 4096
	MaxConditionNodes  = 1000
	MaxLabelBytes      = 256
	MaxBackoffMultiple = 10.0
	// MaxTimeout is the longest a service may take (seed 002, AC4).
	MaxTimeout = 5 * time.Minute
	// MaxBodyBytes bounds the HTTP response body read.
	MaxBodyBytes = 1 << 20
	// MaxOutputBytes bounds a command's captured output (the tail is kept).
	MaxOutputBytes = 64 << 10
	// MaxErrorBytes bounds a result's error text.
	MaxErrorBytes = 512
)

// Defaults for what the config leaves out.
const (
	DefaultTimeout           = 5 * time.Minute
	DefaultAttemptTimeout    = 30 * time.Second
	DefaultRetries           = 3
	DefaultBackoffInitial    = 1 * time.Second
	DefaultBackoffMax        = 30 * time.Second
	DefaultBackoffMultiplier = 2.0
	DefaultConcurrency       = 8
	DefaultSeverity          = "critical"
	DefaultHTTPStatus        = http.StatusOK
	DefaultPostgresPort      = 5432
)

// Check types (Result.Type).
const (
	TypeHTTP     = "http"
	TypePostgres = "postgres"
	TypeRedis    = "redis"
	TypeCommand  = "command"
)

// Config is a resolved gates config: every service's policy has its
// defaults applied. Env, Domain, DeployID and AlertWebhook may be set by
// the caller after Load (flags win over the file).
type Config struct {
	// Env, Domain and DeployID label the alert (and the report).
	Env      string
	Domain   string
	DeployID string
	// AlertWebhook receives the Alertmanager v2 alerts when a gate fails
	// ("" posts nothing).
	AlertWebhook string
	// Severity is the alerts' default severity label.
	Severity string
	// Concurrency bounds the services checked at once.
	Concurrency int
	Services    []Service
}

// Policy is how long and how often one service is tried.
type Policy struct {
	// Timeout bounds the service's attempts and backoffs together.
	Timeout time.Duration
	// AttemptTimeout bounds one attempt (never more than Timeout).
	AttemptTimeout time.Duration
	// Retries is the number of attempts after the first.
	Retries int
	Backoff Backoff
}

// Backoff is the wait between attempts: Initial, then multiplied by
// Multiplier after each retry, at most Max.
type Backoff struct {
	Initial    time.Duration `yaml:"initial"`
	Max        time.Duration `yaml:"max"`
	Multiplier float64       `yaml:"multiplier"`
}

// Service is one gate: a name, a policy and exactly one check.
type Service struct {
	Name     string
	Severity string
	Policy
	HTTP     *HTTPCheck
	Postgres *PostgresCheck
	Redis    *RedisCheck
	Command  *CommandCheck
}

// Type is the service's check type ("" when it has none).
func (s Service) Type() string {
	switch {
	case s.HTTP != nil:
		return TypeHTTP
	case s.Postgres != nil:
		return TypePostgres
	case s.Redis != nil:
		return TypeRedis
	case s.Command != nil:
		return TypeCommand
	}
	return ""
}

// HTTPCheck is an HTTP health endpoint. Redirects are not followed (a 3xx
// is the status the check sees).
type HTTPCheck struct {
	URL    string `yaml:"url"`
	Method string `yaml:"method"`
	// Headers are sent as given (not secret: they appear in the config).
	Headers map[string]string `yaml:"headers"`
	// SecretHeaders maps a header name to the environment variable holding
	// its value (e.g. Authorization: HEALTH_TOKEN).
	SecretHeaders map[string]string `yaml:"secret_headers"`
	// ExpectStatus is the status the endpoint must answer (200).
	ExpectStatus int `yaml:"expect_status"`
	// Condition is an optional expr-lang boolean expression over status
	// (int), body (parsed JSON, or the text), headers (lower-case names,
	// values joined by ", ") and latency_ms (float).
	Condition string `yaml:"condition"`

	program *vm.Program
}

// PostgresCheck is PostgreSQL readiness: connect and SELECT 1. Either DSN
// (URL or keyword/value form, without a password) or Host with Port, User,
// DBName and SSLMode.
type PostgresCheck struct {
	DSN     string `yaml:"dsn"`
	Host    string `yaml:"host"`
	Port    int    `yaml:"port"`
	User    string `yaml:"user"`
	DBName  string `yaml:"dbname"`
	SSLMode string `yaml:"sslmode"`
	// PasswordEnv names the environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
}

// RedisCheck is a Redis PING that must answer PONG.
type RedisCheck struct {
	Addr     string `yaml:"addr"`
	Username string `yaml:"username"`
	DB       int    `yaml:"db"`
	TLS      bool   `yaml:"tls"`
	// PasswordEnv names the environment variable holding the password.
	PasswordEnv string `yaml:"password_env"`
}

// CommandCheck is a smoke test: Argv runs without a shell (in Dir, with
// the gate's environment) and must exit 0.
type CommandCheck struct {
	Argv []string `yaml:"argv"`
	Dir  string   `yaml:"dir"`
}

// ---- the file ----

type fileConfig struct {
	Env          string        `yaml:"env"`
	Domain       string        `yaml:"domain"`
	DeployID     string        `yaml:"deploy_id"`
	AlertWebhook string        `yaml:"alert_webhook"`
	Severity     string        `yaml:"severity"`
	Concurrency  int           `yaml:"concurrency"`
	Defaults     filePolicy    `yaml:"defaults"`
	Services     []fileService `yaml:"services"`
}

type filePolicy struct {
	Timeout        *time.Duration `yaml:"timeout"`
	AttemptTimeout *time.Duration `yaml:"attempt_timeout"`
	Retries        *int           `yaml:"retries"`
	Backoff        *fileBackoff   `yaml:"backoff"`
}

type fileBackoff struct {
	Initial    *time.Duration `yaml:"initial"`
	Max        *time.Duration `yaml:"max"`
	Multiplier *float64       `yaml:"multiplier"`
}

type fileService struct {
	Name       string `yaml:"name"`
	Severity   string `yaml:"severity"`
	filePolicy `yaml:",inline"`
	HTTP       *HTTPCheck     `yaml:"http"`
	Postgres   *PostgresCheck `yaml:"postgres"`
	Redis      *RedisCheck    `yaml:"redis"`
	Command    *CommandCheck  `yaml:"command"`
}

// Load reads and validates a gates file (at most MaxConfigBytes).
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("gates config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("gates config %s: %w", path, err)
	}
	if len(data) > MaxConfigBytes {
		return Config{}, fmt.Errorf("gates config %s: larger than %d bytes", path, MaxConfigBytes)
	}
	return Parse(data, path)
}

// Parse decodes and validates a gates config; name prefixes errors (a
// file name). Unknown fields, a second document, and values out of their
// bounds are errors that name the line.
func Parse(data []byte, name string) (Config, error) {
	if len(data) > MaxConfigBytes {
		return Config{}, fmt.Errorf("%s: larger than %d bytes", name, MaxConfigBytes)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("%s: empty config", name)
		}
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%s:%d: more than one YAML document", name, extra.Line)
	}
	lines := serviceLines(data)
	at := func(i int) string {
		if i < len(lines) {
			return fmt.Sprintf("%s:%d", name, lines[i])
		}
		return name
	}
	cfg := Config{
		Env: fc.Env, Domain: fc.Domain, DeployID: fc.DeployID,
		AlertWebhook: fc.AlertWebhook, Severity: fc.Severity, Concurrency: fc.Concurrency,
	}
	if cfg.Severity == "" {
		cfg.Severity = DefaultSeverity
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	base := Policy{
		Timeout: DefaultTimeout, AttemptTimeout: DefaultAttemptTimeout, Retries: DefaultRetries,
		Backoff: Backoff{Initial: DefaultBackoffInitial, Max: DefaultBackoffMax, Multiplier: DefaultBackoffMultiplier},
	}
	base = fc.Defaults.apply(base)
	if err := base.validate(); err != nil {
		return Config{}, fmt.Errorf("%s: defaults: %w", name, err)
	}
	if err := cfg.validateTop(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if len(fc.Services) == 0 {
		return Config{}, fmt.Errorf("%s: no services", name)
	}
	if len(fc.Services) > MaxServices {
		return Config{}, fmt.Errorf("%s: %d services, more than %d", name, len(fc.Services), MaxServices)
	}
	seen := map[string]int{}
	for i, fs := range fc.Services {
		s := Service{
			Name: fs.Name, Severity: fs.Severity, Policy: fs.filePolicy.apply(base),
			HTTP: fs.HTTP, Postgres: fs.Postgres, Redis: fs.Redis, Command: fs.Command,
		}
		if s.Severity == "" {
			s.Severity = cfg.Severity
		}
		if s.AttemptTimeout > s.Timeout {
			s.AttemptTimeout = s.Timeout
		}
		if err := s.validate(); err != nil {
			return Config{}, fmt.Errorf("%s: service %q: %w", at(i), bounded(s.Name, 64), err)
		}
		if j, dup := seen[s.Name]; dup {
			return Config{}, fmt.Errorf("%s: service %q: name already used by service %d", at(i), s.Name, j+1)
		}
		seen[s.Name] = i
		cfg.Services = append(cfg.Services, s)
	}
	return cfg, nil
}

// serviceLines is the line of each item of the top-level services list.
func serviceLines(data []byte) []int {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "services" && m.Content[i+1].Kind == yaml.SequenceNode {
			var lines []int
			for _, it := range m.Content[i+1].Content {
				lines = append(lines, it.Line)
			}
			return lines
		}
	}
	return nil
}

func (fp filePolicy) apply(p Policy) Policy {
	if fp.Timeout != nil {
		p.Timeout = *fp.Timeout
	}
	if fp.AttemptTimeout != nil {
		p.AttemptTimeout = *fp.AttemptTimeout
	}
	if fp.Retries != nil {
		p.Retries = *fp.Retries
	}
	if b := fp.Backoff; b != nil {
		if b.Initial != nil {
			p.Backoff.Initial = *b.Initial
		}
		if b.Max != nil {
			p.Backoff.Max = *b.Max
		}
		if b.Multiplier != nil {
			p.Backoff.Multiplier = *b.Multiplier
		}
	}
	return p
}

func (p Policy) validate() error {
	switch {
	case p.Timeout <= 0 || p.Timeout > MaxTimeout:
		return fmt.Errorf("timeout %v: must be in (0, %v]", p.Timeout, MaxTimeout)
	case p.AttemptTimeout <= 0:
		return fmt.Errorf("attempt_timeout %v: must be positive", p.AttemptTimeout)
	case p.Retries < 0 || p.Retries > MaxRetries:
		return fmt.Errorf("retries %d: must be in [0, %d]", p.Retries, MaxRetries)
	case p.Backoff.Initial <= 0 || p.Backoff.Initial > MaxTimeout:
		return fmt.Errorf("backoff.initial %v: must be in (0, %v]", p.Backoff.Initial, MaxTimeout)
	case p.Backoff.Max < p.Backoff.Initial || p.Backoff.Max > MaxTimeout:
		return fmt.Errorf("backoff.max %v: must be in [backoff.initial, %v]", p.Backoff.Max, MaxTimeout)
	case !(p.Backoff.Multiplier >= 1 && p.Backoff.Multiplier <= MaxBackoffMultiple):
		return fmt.Errorf("backoff.multiplier %v: must be in [1, %v]", p.Backoff.Multiplier, MaxBackoffMultiple)
	}
	return nil
}

var (
	serviceName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	severityName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	methodName   = regexp.MustCompile(`^[A-Z]{1,16}$`)
	kvPassword   = regexp.MustCompile(`(?i)(^|\s)password\s*=`)
)

func (c Config) validateTop() error {
	for _, f := range []struct{ name, v string }{{"env", c.Env}, {"domain", c.Domain}, {"deploy_id", c.DeployID}} {
		if err := checkLabel(f.name, f.v); err != nil {
			return err
		}
	}
	if !severityName.MatchString(c.Severity) {
		return fmt.Errorf("severity %q: must match %s", bounded(c.Severity, 64), severityName)
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		return fmt.Errorf("concurrency %d: must be in [1, %d]", c.Concurrency, MaxConcurrency)
	}
	if c.AlertWebhook != "" {
		if err := checkHTTPURL(c.AlertWebhook); err != nil {
			return fmt.Errorf("alert_webhook: %w", err)
		}
	}
	return nil
}

// checkLabel bounds a value that becomes an alert label.
func checkLabel(name, v string) error {
	if len(v) > MaxLabelBytes {
		return fmt.Errorf("%s: longer than %d bytes", name, MaxLabelBytes)
	}
	if strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%s: contains non-printable characters", name)
	}
	return nil
}

// checkHTTPURL accepts an absolute http(s) URL without user info (a
// password there would be a secret in the config).
func checkHTTPURL(raw string) error {
	if len(raw) > 2048 {
		return errors.New("URL longer than 2048 bytes")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", redactURL(raw))
	}
	if u.User != nil {
		return errors.New("URL carries user info; put credentials in secret_headers (environment variables)")
	}
	return nil
}

func checkEnvRef(field, v string) error {
	if v != "" && !envName.MatchString(v) {
		return fmt.Errorf("%s %q: not an environment variable name", field, bounded(v, 64))
	}
	return nil
}

// validate checks s and compiles its condition.
func (s *Service) validate() error {
	if !serviceName.MatchString(s.Name) {
		return fmt.Errorf("name must match %s", serviceName)
	}
	if !severityName.MatchString(s.Severity) {
		return fmt.Errorf("severity %q: must match %s", bounded(s.Severity, 64), severityName)
	}
	if err := s.Policy.validate(); err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{s.HTTP != nil, s.Postgres != nil, s.Redis != nil, s.Command != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of http, postgres, redis, command")
	}
	switch {
	case s.HTTP != nil:
		return s.HTTP.validate()
	case s.Postgres != nil:
		return s.Postgres.validate()
	case s.Redis != nil:
		return s.Redis.validate()
	default:
		return s.Command.validate()
	}
}

func (h *HTTPCheck) validate() error {
	if err := checkHTTPURL(h.URL); err != nil {
		return fmt.Errorf("http.url: %w", err)
	}
	if h.Method == "" {
		h.Method = http.MethodGet
	}
	if !methodName.MatchString(h.Method) {
		return fmt.Errorf("http.method %q: not an HTTP method", bounded(h.Method, 32))
	}
	if h.ExpectStatus == 0 {
		h.ExpectStatus = DefaultHTTPStatus
	}
	if h.ExpectStatus < 100 || h.ExpectStatus > 599 {
		return fmt.Errorf("http.expect_status %d: not an HTTP status", h.ExpectStatus)
	}
	if len(h.Headers)+len(h.SecretHeaders) > MaxHeaders {
		return fmt.Errorf("http: more than %d headers", MaxHeaders)
	}
	for k, v := range h.Headers {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) || len(v) > 8192 {
			return fmt.Errorf("http.headers: invalid header %q", bounded(k, 64))
		}
	}
	for k, env := range h.SecretHeaders {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("http.secret_headers: invalid header name %q", bounded(k, 64))
		}
		if err := checkEnvRef("http.secret_headers."+k, env); err != nil || env == "" {
			return fmt.Errorf("http.secret_headers.%s: give an environment variable name", k)
		}
	}
	if len(h.Condition) > MaxConditionBytes {
		return fmt.Errorf("http.condition: longer than %d bytes", MaxConditionBytes)
	}
	if h.Condition != "" {
		p, err := compileCondition(h.Condition)
		if err != nil {
			return fmt.Errorf("http.condition: %s", bounded(err.Error(), 400))
		}
		h.program = p
	}
	return nil
}

// condEnv is what an HTTP condition sees.
type condEnv struct {
	Status    int               `expr:"status"`
	Body      any               `expr:"body"`
	Headers   map[string]string `expr:"headers"`
	LatencyMS float64           `expr:"latency_ms"`
}

func compileCondition(src string) (*vm.Program, error) {
	return expr.Compile(src, expr.Env(condEnv{}), expr.AsBool(), expr.MaxNodes(MaxConditionNodes))
}

func (p *PostgresCheck) validate() error {
	if err := checkEnvRef("postgres.password_env", p.PasswordEnv); err != nil {
		return err
	}
	if p.DSN != "" {
		if p.Host != "" || p.Port != 0 || p.User != "" || p.DBName != "" || p.SSLMode != "" {
			return errors.New("postgres: give dsn or host/port/user/dbname/sslmode, not both")
		}
		if len(p.DSN) > 4096 {
			return errors.New("postgres.dsn: longer than 4096 bytes")
		}
		if dsnHasPassword(p.DSN) {
			return errors.New("postgres.dsn carries a password; name its environment variable in password_env instead")
		}
	} else {
		if p.Host == "" {
			return errors.New("postgres: give dsn or host")
		}
		if p.Port == 0 {
			p.Port = DefaultPostgresPort
		}
		if p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("postgres.port %d: out of range", p.Port)
		}
	}
	if _, err := p.connConfig(""); err != nil {
		return fmt.Errorf("postgres: %s", bounded(err.Error(), 300))
	}
	return nil
}

func dsnHasPassword(dsn string) bool {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return strings.Contains(dsn, "@") // cannot tell: be safe
		}
		_, has := u.User.Password()
		return has || u.Query().Has("password")
	}
	return kvPassword.MatchString(dsn)
}

// connConfig is the pgx configuration; password "" leaves libpq's usual
// sources (PGPASSWORD, .pgpass) in charge.
func (p *PostgresCheck) connConfig(password string) (*pgx.ConnConfig, error) {
	dsn := p.DSN
	if dsn == "" {
		u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), Path: "/" + p.DBName}
		if p.User != "" {
			u.User = url.User(p.User)
		}
		if p.SSLMode != "" {
			u.RawQuery = url.Values{"sslmode": {p.SSLMode}}.Encode()
		}
		dsn = u.String()
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if password != "" {
		cfg.Password = password
	}
	return cfg, nil
}

func (r *RedisCheck) validate() error {
	if err := checkEnvRef("redis.password_env", r.PasswordEnv); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(r.Addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("redis.addr %q: not host:port", bounded(r.Addr, 64))
	}
	if r.DB < 0 || r.DB > 1<<16 {
		return fmt.Errorf("redis.db %d: out of range", r.DB)
	}
	return nil
}

func (c *CommandCheck) validate() error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return errors.New("command.argv: give the program and its arguments")
	}
	if len(c.Argv) > MaxArgs {
		return fmt.Errorf("command.argv: more than %d arguments", MaxArgs)
	}
	for _, a := range c.Argv {
		if len(a) > MaxArgBytes || strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("command.argv: an argument is longer than %d bytes or holds NUL", MaxArgBytes)
		}
	}
	return nil
}

// bounded cuts s to n bytes for an error message.
func bounded(s string, n int) string { return clip(s, n) }
