// Package verdict turns a flow's results over a window into pass, fail or
// inconclusive for canary analysis (no data is inconclusive, never pass),
// and signs verdicts as DSSE envelopes over in-toto Statements.
package verdict

import (
	"fmt"
	"time"
)

// Outcomes.
const (
	Pass         = "pass"
	Fail         = "fail"
	Inconclusive = "inconclusive"
)

// Verdict is the answer of GET /v1/verdicts/{flow}.
type Verdict struct {
	Flow            string    `json:"flow"`
	Env             string    `json:"env"`
	Window          string    `json:"window"`
	From            time.Time `json:"from"`
	To              time.Time `json:"to"`
	Verdict         string    `json:"verdict"`
	Runs            uint64    `json:"runs"`
	Failures        uint64    `json:"failures"`
	SuccessRatio    *float64  `json:"success_ratio"` // null without runs
	MinSamples      int       `json:"min_samples"`
	MinSuccessRatio float64   `json:"min_success_ratio"`
	Reason          string    `json:"reason"`
	// FlowDigest is the sha256 of the flow's definition, so a verdict names
	// exactly which probe produced it.
	FlowDigest string `json:"flow_digest"`
}

// Decide fills Verdict, SuccessRatio and Reason from Runs and Failures.
func (v *Verdict) Decide() {
	if v.Runs == 0 || v.Runs < uint64(v.MinSamples) {
		v.Verdict = Inconclusive
		v.Reason = fmt.Sprintf("%d run(s) in the window, fewer than min_samples %d: no data is not a pass", v.Runs, v.MinSamples)
		if v.Runs > 0 {
			r := float64(v.Runs-v.Failures) / float64(v.Runs)
			v.SuccessRatio = &r
		}
		return
	}
	r := float64(v.Runs-v.Failures) / float64(v.Runs)
	v.SuccessRatio = &r
	if r < v.MinSuccessRatio {
		v.Verdict = Fail
		v.Reason = fmt.Sprintf("success ratio %.4f (%d of %d runs failed) is below %.4f", r, v.Failures, v.Runs, v.MinSuccessRatio)
		return
	}
	v.Verdict = Pass
	v.Reason = fmt.Sprintf("success ratio %.4f over %d runs meets %.4f", r, v.Runs, v.MinSuccessRatio)
}
