package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// TestDeployPipeline runs the acceptance cases of the deploy pipeline on
// one cluster. In each: exactly one successful deploy of the release at the
// target, no two deploys overlapping, both runners exit with the recorded
// outcome.
func TestDeployPipeline(t *testing.T) {
	r := newRig(t)

	t.Run("primary-healthy", func(t *testing.T) {
		const dom, rel = "deploy.healthy", "sha256:a1"
		r.lock(t, dom)
		tg := newTarget(t)
		p := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg})
		s := r.start(t, runOpts{domain: dom, release: rel, role: "secondary", group: "group-b", holder: "runner-b", target: tg})
		if code := p.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("primary exited %d", code)
		}
		if code := s.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("secondary exited %d", code)
		}
		checkOneDeploy(t, tg.calls(), rel)
		for _, op := range tg.calls() {
			if op.group != "group-a" {
				t.Fatalf("the secondary deployed too: %+v", tg.calls())
			}
		}
		dep := r.deployment(t, dom)
		if dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED || dep.GetFailovers() != 0 || dep.GetRunnerGroup() != "group-a" {
			t.Fatalf("recorded: %v", dep)
		}

		// Re-running the succeeded deploy id is a no-op that says so.
		again := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg})
		if code := again.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("re-run exited %d", code)
		}
		if n := len(tg.calls()); n != 3 {
			t.Fatalf("the re-run called the target: %+v", tg.calls())
		}
		if !contains(again.out.String(), "already succeeded") {
			t.Fatalf("the re-run did not say it was a no-op:\n%s", again.out.String())
		}
	})

	t.Run("primary-killed-mid-deploy", func(t *testing.T) {
		took := failoverAfterKill(t, r, "deploy.kill", "sha256:b1")
		t.Logf("kill -9 of the primary -> the secondary holds the lock: %s (TTL %s)", took, lockTTL)
	})

	t.Run("primary-paused-past-ttl", func(t *testing.T) {
		const dom, rel = "deploy.pause", "sha256:c1"
		r.lock(t, dom)
		tg := newTarget(t)
		tg.holdFor = "group-a"
		p := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg})
		s := r.start(t, runOpts{domain: dom, release: rel, role: "secondary", group: "group-b", holder: "runner-b", target: tg})
		ops := tg.await(t, "the primary's work call", 30*time.Second, func(ops []targetOp) bool {
			return slices.ContainsFunc(ops, func(o targetOp) bool { return o.step == "work" && o.group == "group-a" })
		})
		cmdPid := ops[0].pid
		// The whole runner host freezes: the runner and its deploy command.
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		killGroup(cmdPid, syscall.SIGSTOP)
		tg.await(t, "the secondary's commit", 60*time.Second, func(ops []targetOp) bool {
			return slices.ContainsFunc(ops, func(o targetOp) bool { return o.step == "commit" && o.group == "group-b" && !o.refused })
		})
		// Resumed: the runner finds its lease past its deadline and stops
		// the command (still blocked in its held call) before it can do
		// anything more.
		killGroup(cmdPid, syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		awaitGone(t, cmdPid, 20*time.Second, "the resumed primary's deploy command")
		tg.unhold()
		if code := s.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("secondary exited %d", code)
		}
		if code := p.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("the resumed primary exited %d (the deployment succeeded on the secondary)", code)
		}
		commit := checkOneDeploy(t, tg.calls(), rel)
		if commit.group != "group-b" {
			t.Fatalf("commit by %s", commit.group)
		}
		dep := r.deployment(t, dom)
		if dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED || dep.GetFailovers() != 1 {
			t.Fatalf("recorded: %v", dep)
		}
		if !contains(p.out.String(), "the deploy lock was lost") {
			t.Fatalf("the resumed primary did not say it stopped its command:\n%s", p.out.String())
		}
		// A late step of the paused runner (epoch 1) is refused by the
		// fence check, online and with a target-side state file.
		state := filepath.Join(t.TempDir(), "deploy-epoch")
		if code := r.ctl(t, "fence", "--domain", dom, "--epoch", "2", "--state", state); code != 0 {
			t.Fatalf("fence at the current epoch exited %d", code)
		}
		if code := r.ctl(t, "fence", "--domain", dom, "--epoch", "1"); code != 1 {
			t.Fatalf("fence at the superseded epoch exited %d, want 1", code)
		}
		if code := r.ctl(t, "fence", "--domain", dom, "--epoch", "1", "--state", state, "--offline"); code != 1 {
			t.Fatalf("fence --state at a lower epoch exited %d, want 1", code)
		}
		if b, err := os.ReadFile(state); err != nil || string(b) != "2\n" {
			t.Fatalf("the state file holds %q (%v), want epoch 2", b, err)
		}
	})

	t.Run("command-hangs", func(t *testing.T) {
		const dom, rel = "deploy.hang", "sha256:d1"
		r.lock(t, dom)
		tg := newTarget(t)
		hang := []string{"DEPLOYTEST_HANG_GROUPS=group-a"}
		p := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg,
			env: hang, args: []string{"--cmd-timeout", "2s"}})
		s := r.start(t, runOpts{domain: dom, release: rel, role: "secondary", group: "group-b", holder: "runner-b", target: tg, env: hang})
		if code := s.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("secondary exited %d", code)
		}
		if code := p.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("primary exited %d", code)
		}
		checkOneDeploy(t, tg.calls(), rel)
		dep := r.deployment(t, dom)
		if dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED || dep.GetFailovers() != 1 || dep.GetRunnerGroup() != "group-b" {
			t.Fatalf("recorded: %v", dep)
		}
	})

	t.Run("both-runners-fail", func(t *testing.T) {
		const dom, rel = "deploy.bothfail", "sha256:e1"
		r.lock(t, dom)
		tg := newTarget(t)
		wh := newWebhook(t)
		fail := []string{"DEPLOYTEST_FAIL_GROUPS=group-a,group-b"}
		alerting := []string{"--alert-webhook", wh.srv.URL}
		p := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg, env: fail, args: alerting})
		s := r.start(t, runOpts{domain: dom, release: rel, role: "secondary", group: "group-b", holder: "runner-b", target: tg, env: fail, args: alerting})
		if code := s.wait(t, 60*time.Second); code == 0 {
			t.Fatalf("secondary exited 0")
		}
		if code := p.wait(t, 60*time.Second); code == 0 {
			t.Fatalf("primary exited 0")
		}
		dep := r.deployment(t, dom)
		if dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_FAILED || !contains(dep.GetReason(), "both runner groups failed") {
			t.Fatalf("recorded: %v", dep)
		}
		if got := wh.labels(); len(got) != 1 || got[0]["alertname"] != "DeployFailedOnBothRunnerGroups" || got[0]["deploy_id"] != "prod@"+rel {
			t.Fatalf("alerts received: %v", got)
		}
		// A failed deploy id is not run again without --retry.
		again := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg})
		if code := again.wait(t, 60*time.Second); code == 0 || !contains(again.out.String(), "--retry") {
			t.Fatalf("re-run of a failed deploy id exited %d:\n%s", code, again.out.String())
		}
		retry := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg,
			args: []string{"--retry"}})
		if code := retry.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("--retry exited %d", code)
		}
		checkOneDeploy(t, tg.calls(), rel)
		if dep := r.deployment(t, dom); dep.GetAttempt() != 2 || dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED {
			t.Fatalf("after --retry: %v", dep)
		}
	})

	t.Run("preflight-fails-on-primary", func(t *testing.T) {
		const dom, rel, secret = "deploy.preflight", "sha256:g1", "s3cr3t-value-7781"
		r.lock(t, dom)
		tg := newTarget(t)
		pf := writeFile(t, "preflight.yaml", "skip: [docker, network]\ndisk: {min_free: 1MB}\nmemory: {min: 1MB}\n"+
			"secrets: {required: [DEPLOY_TOKEN]}\n")
		args := []string{"--preflight", pf}
		p := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg, args: args})
		s := r.start(t, runOpts{domain: dom, release: rel, role: "secondary", group: "group-b", holder: "runner-b", target: tg, args: args,
			env: []string{"DEPLOY_TOKEN=" + secret}})
		if code := s.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("secondary exited %d", code)
		}
		if code := p.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("primary exited %d", code)
		}
		commit := checkOneDeploy(t, tg.calls(), rel)
		if commit.group != "group-b" || slices.ContainsFunc(tg.calls(), func(o targetOp) bool { return o.group == "group-a" }) {
			t.Fatalf("the primary deployed despite its failed preflight: %+v", tg.calls())
		}
		dep := r.deployment(t, dom)
		if dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED || dep.GetFailovers() != 1 {
			t.Fatalf("recorded: %v", dep)
		}
		for _, text := range []string{p.out.String(), s.out.String(), dep.String()} {
			if contains(text, secret) {
				t.Fatalf("the secret's value leaked:\n%s", text)
			}
		}
	})

	t.Run("health-gate-fails", func(t *testing.T) {
		const dom, rel = "deploy.gates", "sha256:h1"
		r.lock(t, dom)
		tg := newTarget(t)
		wh := newWebhook(t)
		redisAddr, stopRedis := startRedis(t)
		gates := writeFile(t, "gates.yaml", fmt.Sprintf("defaults: {timeout: 4s, attempt_timeout: 1s, retries: 2, "+
			"backoff: {initial: 100ms, max: 200ms, multiplier: 2}}\nservices:\n"+
			"  - name: api\n    http: {url: %q, condition: 'body.status == \"ok\"'}\n"+
			"  - name: redis\n    redis: {addr: %q}\n", tg.srv.URL+"/health", redisAddr))
		stopRedis() // Redis is down after the deploy
		args := []string{"--gates", gates, "--alert-webhook", wh.srv.URL}
		p := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg, args: args})
		s := r.start(t, runOpts{domain: dom, release: rel, role: "secondary", group: "group-b", holder: "runner-b", target: tg, args: args})
		if code := p.wait(t, 60*time.Second); code != 1 {
			t.Fatalf("primary exited %d, want 1", code)
		}
		if code := s.wait(t, 60*time.Second); code != 1 {
			t.Fatalf("secondary exited %d, want 1 (the deployment failed)", code)
		}
		checkOneDeploy(t, tg.calls(), rel) // deployed once, then failed verification: no second deploy
		dep := r.deployment(t, dom)
		if dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_FAILED || !slices.Equal(dep.GetFailedChecks(), []string{"gate:redis"}) {
			t.Fatalf("recorded: %v", dep)
		}
		got := wh.labels()
		if len(got) != 1 || got[0]["alertname"] != "DeployHealthGateFailed" || got[0]["service"] != "redis" || got[0]["env"] != "prod" {
			t.Fatalf("alerts received: %v", got)
		}
		r.awaitEvent(t, dom, "deploy.rollback_required")
	})

	// The metrics equal the outcomes above, on every server: 6 deployments
	// succeeded (healthy, kill, pause, hang, retry, preflight), 2 failed
	// (both runners, health gate); 5 failovers (kill, pause, hang,
	// preflight: succeeded; both-fail: failed); one preflight failure
	// (secrets) and one health gate failure (redis).
	t.Run("metrics-equal-outcomes", func(t *testing.T) {
		if t.Failed() {
			return
		}
		checkDeployMetrics(t, r.c, map[string]float64{
			`deploy_attempts_total{env="prod",result="succeeded"}`:  6,
			`deploy_attempts_total{env="prod",result="failed"}`:     2,
			`deploy_failovers_total{env="prod",result="succeeded"}`: 4,
			`deploy_failovers_total{env="prod",result="failed"}`:    1,
			`deploy_duration_seconds_count{env="prod"}`:             8,
			`deploy_failover_seconds_count{env="prod"}`:             5,
			`preflight_failures_total{check="secrets"}`:             1,
			`health_gate_failures_total{service="redis"}`:           1,
		})
	})
}

// failoverAfterKill kill -9s the primary mid-deploy and returns the time
// from the kill to the secondary's grant of the lock.
func failoverAfterKill(t *testing.T, r *rig, dom, rel string) time.Duration {
	r.lock(t, dom)
	tg := newTarget(t)
	tg.holdFor = "group-a"
	p := r.start(t, runOpts{domain: dom, release: rel, role: "primary", group: "group-a", holder: "runner-a", target: tg})
	s := r.start(t, runOpts{domain: dom, release: rel, role: "secondary", group: "group-b", holder: "runner-b", target: tg})
	tg.await(t, "the primary's work call", 30*time.Second, func(ops []targetOp) bool {
		return slices.ContainsFunc(ops, func(o targetOp) bool { return o.step == "work" && o.group == "group-a" })
	})
	cmdPid := tg.calls()[0].pid
	killed := time.Now()
	_ = p.cmd.Process.Kill()
	awaitGone(t, cmdPid, 10*time.Second, "the killed runner's deploy command") // it dies with its runner
	if code := s.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("secondary exited %d", code)
	}
	commit := checkOneDeploy(t, tg.calls(), rel)
	if commit.group != "group-b" {
		t.Fatalf("commit by %s", commit.group)
	}
	dep := r.deployment(t, dom)
	if dep.GetStatus() != pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED || dep.GetFailovers() != 1 || dep.GetEpoch() != 2 {
		t.Fatalf("recorded: %v", dep)
	}
	return r.acquiredAt(t, dom, 2).Sub(killed)
}

// TestFailoverTimes repeats the kill -9 case (DEPLOY_FAILOVER_RUNS, default
// 3; the closing numbers use 20) and reports the median and the maximum
// time from the kill to the secondary holding the lock. Speed is reported,
// not asserted.
func TestFailoverTimes(t *testing.T) {
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("DEPLOY_FAILOVER_RUNS")); err == nil && v > 0 {
		runs = v
	}
	r := newRig(t)
	var took []time.Duration
	for i := range runs {
		took = append(took, failoverAfterKill(t, r, fmt.Sprintf("deploy.times-%d", i), fmt.Sprintf("sha256:f%d", i)))
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("kill -9 -> secondary holds the lock over %d runs (TTL %s): median %s, max %s, all %v",
		runs, lockTTL, took[len(took)/2], took[len(took)-1], took)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
