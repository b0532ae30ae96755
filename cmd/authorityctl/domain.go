package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/fsm"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Domain kinds as named on the command line.
var domainKinds = map[string]pb.DomainKind{
	"aerodb":  pb.DomainKind_DOMAIN_KIND_AERODB,
	"lock":    pb.DomainKind_DOMAIN_KIND_LOCK,
	"release": pb.DomainKind_DOMAIN_KIND_RELEASE,
}

// newDomainCmd: create, get, list, update.
func newDomainCmd(o *options) *cobra.Command {
	return newGroupCmd("domain", "Create, read and change domains",
		newDomainCreateCmd(o), newDomainGetCmd(o), newDomainListCmd(o), newDomainUpdateCmd(o))
}

// Policy flag defaults: the server's own defaults (promotion.WithDefaults).
const (
	defaultLeaseTTL     = 10 * time.Second
	defaultReportMaxAge = 30 * time.Second
	defaultMinSync      = 1
)

// policyFlags are the policy flags of create and update.
type policyFlags struct {
	ttl               positiveDuration
	manual, automatic bool
	promotionDisabled bool
	reportMaxAge      positiveDuration
	minSync           uint32
	durability        enumValue
	watermarkInterval time.Duration
	releasePolicy     string
	rp                *pb.ReleasePolicy // parsed from releasePolicy by check
	waivers           enumValue
	waiverReason      string
}

// waiverModes maps --waivers to the policy's enum.
var waiverModes = map[string]pb.WaiverMode{
	"strict":    pb.WaiverMode_WAIVER_MODE_STRICT,
	"permitted": pb.WaiverMode_WAIVER_MODE_PERMITTED,
}

// durabilities maps --durability to the policy's enum.
var durabilities = map[string]pb.Durability{
	"authority-gated": pb.Durability_DURABILITY_AUTHORITY_GATED,
	"replica-quorum":  pb.Durability_DURABILITY_REPLICA_QUORUM,
}

func (f *policyFlags) add(cmd *cobra.Command) {
	f.ttl, f.reportMaxAge, f.minSync = positiveDuration(defaultLeaseTTL), positiveDuration(defaultReportMaxAge), defaultMinSync
	fs := cmd.Flags()
	fs.Var(&f.ttl, "ttl", "lease TTL granted to the holder")
	fs.BoolVar(&f.manual, "manual", false, "manual promotion only (the default for a new domain)")
	fs.BoolVar(&f.automatic, "automatic", false, "let policy promote on its own")
	fs.BoolVar(&f.promotionDisabled, "promotion-disabled", false, "disable promotion (--promotion-disabled=false enables it)")
	fs.Var(&f.reportMaxAge, "report-max-age", "a candidate's progress report older than this is stale evidence")
	fs.Uint32Var(&f.minSync, "min-sync", defaultMinSync, "K: replicas that must have flushed a write before it is acknowledged (replica-quorum) or the watermark may reach it")
	// No value unless given: create then leaves the choice to the server
	// (replica-quorum for a new aerodb domain; lock and release domains
	// have no other mode than authority-gated), update keeps the domain's.
	f.durability = enumValue{allowed: []string{"authority-gated", "replica-quorum"}}
	fs.Var(&f.durability, "durability", "aerodb domains: replica-quorum (acknowledge after K replicas flushed; the default of a new aerodb domain) "+
		"or authority-gated (acknowledge after the watermark commits); docs/DURABILITY.md. Not given, update keeps the domain's")
	fs.DurationVar(&f.watermarkInterval, "watermark-interval", 0, "replica-quorum: the holder advances the watermark at most once per interval (0: 1s)")
	// Like --durability: not given, create takes the server's default
	// (strict for a new aerodb domain) and update keeps the domain's.
	f.waivers = enumValue{allowed: []string{"strict", "permitted"}}
	fs.Var(&f.waivers, "waivers", "aerodb domains: strict (no promotion request may carry a waiver: Phase 6 readiness §4; the default of a new aerodb domain) "+
		"or permitted (an explicit deviation: needs --waiver-reason, named in every waived explanation); docs/WAIVERS.md. Not given, update keeps the domain's")
	fs.StringVar(&f.waiverReason, "waiver-reason", "", fmt.Sprintf("with --waivers permitted: why waivers are permitted on this domain (recorded; at most %d bytes)", fsm.MaxWaiverReason))
	fs.StringVar(&f.releasePolicy, "release-policy", "", "release domains: the release policy, a JSON file (proto3 JSON of authority.v1.ReleasePolicy: keys, windows, allowlist, analysis and budget; docs/RELEASES.md)")
	cmd.MarkFlagsMutuallyExclusive("manual", "automatic")
}

// overlay writes the flags onto p: every flag (all=true, create) or only
// those given on the command line (update).
func (f *policyFlags) overlay(fs *pflag.FlagSet, p *pb.Policy, all bool) {
	set := func(name string) bool { return all || fs.Changed(name) }
	if set("ttl") {
		p.LeaseTtlMs = uint64(time.Duration(f.ttl).Milliseconds())
	}
	switch {
	case f.automatic:
		p.Mode = pb.PromotionMode_PROMOTION_MODE_AUTOMATIC
	case f.manual || all:
		p.Mode = pb.PromotionMode_PROMOTION_MODE_MANUAL
	}
	if set("promotion-disabled") {
		p.PromotionDisabled = f.promotionDisabled
	}
	if set("report-max-age") {
		p.ReportMaxAgeMs = uint64(time.Duration(f.reportMaxAge).Milliseconds())
	}
	if set("min-sync") {
		p.MinSyncReplicas = f.minSync
	}
	if fs.Changed("durability") { // create: the server's default, by kind
		p.Durability = durabilities[f.durability.value]
	}
	if set("watermark-interval") {
		p.WatermarkIntervalMs = uint64(f.watermarkInterval.Milliseconds())
	}
	if fs.Changed("release-policy") {
		p.Release = f.rp
	}
	if fs.Changed("waivers") { // strict clears a previous deviation's reason
		p.WaiverMode, p.WaiverReason = waiverModes[f.waivers.value], f.waiverReason
	}
}

// policyFlagNames are the flags add registers.
var policyFlagNames = [...]string{"ttl", "manual", "automatic", "promotion-disabled", "report-max-age", "min-sync", "durability", "watermark-interval", "release-policy", "waivers"}

// anyGiven reports whether a policy flag was given on the command line.
func (f *policyFlags) anyGiven(fs *pflag.FlagSet) bool {
	for _, n := range policyFlagNames {
		if fs.Changed(n) {
			return true
		}
	}
	return false
}

// check validates the given flags with the FSM's own policy rule, laid
// over the defaults so that only the given values can fail; it needs no
// network.
func (f *policyFlags) check(fs *pflag.FlagSet) error {
	if fs.Changed("waiver-reason") && f.waivers.value != "permitted" {
		return usagef("--waiver-reason goes with --waivers permitted (the recorded deviation)")
	}
	if fs.Changed("release-policy") {
		b, err := readBounded(f.releasePolicy, 1<<20)
		if err != nil {
			return usageError{err}
		}
		f.rp = &pb.ReleasePolicy{}
		if err := protojson.Unmarshal(b, f.rp); err != nil {
			return usagef("--release-policy %s: %v", f.releasePolicy, err)
		}
	}
	p := &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: uint64(defaultLeaseTTL.Milliseconds()),
		ReportMaxAgeMs: uint64(defaultReportMaxAge.Milliseconds()), MinSyncReplicas: defaultMinSync}
	f.overlay(fs, p, false)
	if err := fsm.ValidatePolicy(p); err != nil {
		return usageError{err}
	}
	return nil
}

func newDomainCreateCmd(o *options) *cobra.Command {
	var pf policyFlags
	kind := enumValue{allowed: []string{"aerodb", "lock", "release"}}
	cmd := &cobra.Command{
		Use:   "create NAME --kind aerodb|lock|release",
		Short: "Create a domain",
		Long: `Creates a domain with the given kind and policy (flags not given take the
server's defaults: manual promotion, 10s lease TTL, 30s report age, 1 sync
replica, and for an aerodb domain replica-quorum durability: give
--durability authority-gated for the other mode). On an unknown outcome
(exit 1, OUTCOME_UNKNOWN) read it back with 'domain get'.`,
		Args: exactArgs("NAME"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkNames("domain", name); err != nil {
				return err
			}
			if err := pf.check(cmd.Flags()); err != nil {
				return err
			}
			policy := &pb.Policy{}
			pf.overlay(cmd.Flags(), policy, true)
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			d, err := c.CreateDomain(ctx, name, domainKinds[kind.value], policy)
			if err != nil {
				return err
			}
			return o.printer().Domain(d)
		}),
	}
	cmd.Flags().Var(&kind, "kind", "domain kind: aerodb, lock or release")
	markRequired(cmd, "kind")
	pf.add(cmd)
	return cmd
}

func newDomainGetCmd(o *options) *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:               "get NAME",
		ValidArgsFunction: completeDomains(o),
		Short:             "Show a domain's full state",
		Args:              exactArgs("NAME"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0]); err != nil {
				return err
			}
			d, err := fetchDomain(cmd.Context(), o, args[0], readOpts(stale)...)
			if err != nil {
				return err
			}
			return o.printer().Domain(d)
		}),
	}
	addStaleFlag(cmd, &stale)
	return cmd
}

func newDomainListCmd(o *options) *cobra.Command {
	var (
		stale bool
		wf    watchFlags
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every domain's summary, sorted by name",
		Args:  exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return wf.run(cmd.Context(), o, func(ctx context.Context, w io.Writer) error {
				ctx, cancel := o.withTimeout(ctx)
				defer cancel()
				c, err := o.connect(ctx)
				if err != nil {
					return err
				}
				defer closeQuietly(c)
				ds, err := c.ListDomains(ctx, readOpts(stale)...)
				if err != nil {
					return err
				}
				return o.withPrinter(w).Domains(ds)
			})
		}),
	}
	addStaleFlag(cmd, &stale)
	wf.add(cmd)
	return cmd
}

func newDomainUpdateCmd(o *options) *cobra.Command {
	var pf policyFlags
	cmd := &cobra.Command{
		Use:               "update NAME [policy flags]",
		ValidArgsFunction: completeDomains(o),
		Short:             "Change a domain's policy: the flags given replace those fields, the rest stay",
		Long: `Reads the domain's current policy, applies the flags given and sends the whole
policy back. A concurrent change between the read and the write is
overwritten (the API has no compare-and-set on policies).`,
		Args: exactArgs("NAME"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkNames("domain", name); err != nil {
				return err
			}
			if !pf.anyGiven(cmd.Flags()) {
				return usagef("nothing to change: give at least one policy flag (%s)", strings.Join(policyFlagNames[:], ", "))
			}
			if err := pf.check(cmd.Flags()); err != nil {
				return err
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			d, err := c.GetDomain(ctx, name)
			if err != nil {
				return err
			}
			policy := proto.CloneOf(d.GetPolicy())
			if policy == nil {
				policy = &pb.Policy{}
			}
			pf.overlay(cmd.Flags(), policy, false)
			d, err = c.UpdatePolicy(ctx, name, policy)
			if err != nil {
				return err
			}
			return o.printer().Domain(d)
		}),
	}
	pf.add(cmd)
	return cmd
}

func addStaleFlag(cmd *cobra.Command, stale *bool) {
	cmd.Flags().BoolVar(stale, "stale", false, "serve from the answering server's applied state (may miss the latest commits)")
}

func readOpts(stale bool) []client.ReadOption {
	if stale {
		return []client.ReadOption{client.Stale()}
	}
	return nil
}

// fetchDomain reads one domain in its own connection, bounded by --timeout
// (domain get, deploy get, release get, fence).
func fetchDomain(ctx context.Context, o *options, name string, opts ...client.ReadOption) (*pb.Domain, error) {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	c, err := o.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeQuietly(c)
	return c.GetDomain(ctx, name, opts...)
}
