package refnode

import (
	"errors"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/credentials"
)

// Config of a node. Every field is documented where it is declared;
// Validate reports every problem at once.
type Config struct {
	// ID is the node's member id in the domain (e.g. "n1").
	ID string
	// Domain is the authority domain (kind aerodb) the node belongs to.
	Domain string
	// DataDir holds the WAL, the fence epoch and the diverged marker.
	DataDir string
	// Listen is the gRPC listen address.
	Listen string
	// Advertise is the address registered as the member's address, which
	// replicas and clients use to find the primary (default: Listen).
	Advertise string
	// Authority lists authority gRPC endpoints.
	Authority []string
	// Credentials secure the connections to the authority
	// (client.Config.Credentials): mutual TLS with a certificate of
	// identity node:<ID> (the authority lets a node acquire, renew,
	// release, advance watermarks and report progress only as itself), e.g.
	// tlsfiles.Source.Credentials(true). Nil is plaintext, for an authority
	// run with --insecure.
	Credentials credentials.TransportCredentials
	// Peers are the other refnodes' addresses; the primary ships its WAL to
	// them and to every other member's registered address.
	Peers []string
	// InitialPrimary names the member to assign as the first holder when
	// the domain has none (epoch 0); only that node assigns.
	//
	// Creating the domain (CreateDomain), registering this node's address
	// and assigning the first holder are administration: over mutual TLS
	// only an operator may do them, so a node with a node:<ID> certificate
	// expects an operator to have done them (Provision) and stops with an
	// error naming what is missing otherwise. The flags still work against
	// an --insecure authority.
	InitialPrimary string
	// CreateDomain creates the domain when it does not exist, with
	// LeaseTTL and ReportMaxAge (DomainPolicy).
	CreateDomain bool
	LeaseTTL     time.Duration
	ReportMaxAge time.Duration
	// Durability (with CreateDomain) of the created domain (see
	// Setup.Durability): replica-quorum with K = 1 — the authority's
	// default, also for DURABILITY_UNSPECIFIED — with WatermarkInterval
	// (0: the authority's default, 1 s), or DURABILITY_AUTHORITY_GATED.
	// The mode a node follows is always the domain's policy, read at each
	// role start: an existing domain keeps its own.
	Durability        pb.Durability
	WatermarkInterval time.Duration
	// PollInterval is how often the node reads the domain to follow the
	// holder and the epoch (default 100 ms).
	PollInterval time.Duration
	// ReportInterval is how often a replica reports progress (default
	// 200 ms; also at once after every flushed batch).
	ReportInterval time.Duration
	// Logger (default: hclog to stderr).
	Logger hclog.Logger
}

func (c Config) withDefaults() Config {
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	if c.PollInterval == 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = 200 * time.Millisecond
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.ReportMaxAge == 0 {
		c.ReportMaxAge = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "refnode/" + c.ID})
	}
	return c
}

// Validate returns every problem of the configuration (flag names as the
// refnode command spells them).
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("--id is required"))
	}
	if c.Domain == "" {
		errs = append(errs, errors.New("--domain is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen is required"))
	}
	if len(c.Authority) == 0 {
		errs = append(errs, errors.New("--authority needs at least one endpoint"))
	}
	if c.LeaseTTL < 0 || c.CreateDomain && c.LeaseTTL > 0 && c.LeaseTTL < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--lease-ttl %v must be at least 100ms", c.LeaseTTL))
	}
	if c.WatermarkInterval < 0 || c.WatermarkInterval > 0 && c.WatermarkInterval < time.Millisecond {
		errs = append(errs, fmt.Errorf("--watermark-interval %v must be at least 1ms (0: the default)", c.WatermarkInterval))
	}
	if c.PollInterval < 0 || c.ReportInterval < 0 {
		errs = append(errs, errors.New("--poll-interval and --report-interval must not be negative"))
	}
	return errors.Join(errs...)
}
