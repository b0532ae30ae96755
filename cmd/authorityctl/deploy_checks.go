package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/pipeline/alert"
	"github.com/aerodb/authority/pipeline/gate"
	"github.com/aerodb/authority/pipeline/preflight"
)

// checkFiles are the runner's check configurations (empty: skipped).
type checkFiles struct {
	preflight, gates, webhook string
	overrides                 []string
}

// loadDeployChecks builds the runner's checks from --preflight, --override,
// --gates and --alert-webhook. Configuration errors are found here, before
// the runner touches the lock. Reports go to log (the runner's stderr).
func loadDeployChecks(files checkFiles, env, domain, deployID string, log io.Writer, getenv func(string) string) (deployChecks, error) {
	var dc deployChecks
	if files.preflight != "" {
		cfg, err := preflight.LoadConfig(files.preflight)
		if err != nil {
			return dc, err
		}
		for _, s := range files.overrides {
			ov, err := preflight.ParseOverride(s)
			if err != nil {
				return dc, err
			}
			cfg.SetOverride(ov)
		}
		if err := cfg.Validate(); err != nil {
			return dc, err
		}
		dc.preflight = func(ctx context.Context) ([]string, []*pb.DeployOverride, string, error) {
			rep, err := preflight.Run(ctx, cfg, getenv)
			if err != nil {
				return nil, nil, "", err
			}
			_ = rep.WriteText(log)
			var failed []string
			for _, r := range rep.Failed() {
				failed = append(failed, "preflight:"+r.Name)
			}
			var overrides []*pb.DeployOverride
			for _, r := range rep.Overridden() {
				overrides = append(overrides, &pb.DeployOverride{Check: r.Name, Reason: bounded(r.OverrideReason, fsm.MaxDeployReasonLen)})
			}
			summary := "all checks passed"
			if !rep.Passed {
				summary = rep.FailedNames()
			}
			return failed, overrides, summary, nil
		}
	} else if len(files.overrides) > 0 {
		return dc, fmt.Errorf("--override applies to --preflight checks; give --preflight FILE")
	}
	if files.gates != "" {
		cfg, err := gate.Load(files.gates)
		if err != nil {
			return dc, err
		}
		cfg.Env, cfg.Domain, cfg.DeployID = env, domain, deployID
		if files.webhook != "" {
			cfg.AlertWebhook = files.webhook // gate.Run posts the gate alert itself
		}
		dc.gates = func(ctx context.Context) ([]string, string, error) {
			rep := gate.Run(ctx, cfg)
			var failed []string
			var detail []string
			for _, r := range rep.Services {
				if !r.Passed {
					failed = append(failed, "gate:"+r.Name)
					detail = append(detail, r.Name+": "+r.Error)
				}
			}
			if len(failed) > fsm.MaxDeployChecks {
				failed = failed[:fsm.MaxDeployChecks]
			}
			if rep.Passed {
				return nil, fmt.Sprintf("%d gates passed", len(rep.Services)), nil
			}
			return failed, strings.Join(detail, "; "), nil
		}
	}
	if files.webhook != "" {
		dc.alert = func(ctx context.Context, name, summary string, labels map[string]string) error {
			l := map[string]string{"alertname": name, "severity": "critical"}
			for k, v := range labels {
				l[k] = bounded(v, alert.MaxLabelValueBytes)
			}
			return alert.Post(ctx, files.webhook, []alert.Alert{{Labels: l,
				Annotations: map[string]string{"summary": bounded(summary, 512), "description": "deploy " + deployID + " failed on every runner group"},
				StartsAt:    time.Now()}})
		}
	}
	return dc, nil
}
