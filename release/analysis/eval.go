package analysis

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
)

// Phase of a measurement, a metric or a run.
type Phase string

// Phases, as Argo names them.
const (
	Pending      Phase = "Pending"
	Running      Phase = "Running"
	Successful   Phase = "Successful"
	Inconclusive Phase = "Inconclusive"
	Error        Phase = "Error"
	Failed       Phase = "Failed"
)

// rank orders phases as Argo's IsWorse does: Failed > Error > Inconclusive >
// Successful > Running > Pending.
func rank(p Phase) int {
	switch p {
	case Failed:
		return 5
	case Error:
		return 4
	case Inconclusive:
		return 3
	case Successful:
		return 2
	case Running:
		return 1
	}
	return 0
}

// Worse reports whether a is worse than b (Argo's ordering).
func Worse(a, b Phase) bool { return rank(a) > rank(b) }

// Completed: the phase is terminal.
func (p Phase) Completed() bool { return rank(p) >= rank(Successful) }

// Action is what the rollout controller does with a run phase: continue on
// Successful, abort on Failed or Error (as Argo), pause otherwise —
// Inconclusive and unfinished runs never promote.
func (p Phase) Action() string {
	switch p {
	case Successful:
		return "continue"
	case Failed, Error:
		return "abort"
	}
	return "pause"
}

type env struct {
	Result any `expr:"result"`
}

func compile(cond string) (*vm.Program, error) {
	return expr.Compile(cond, expr.Env(env{}), expr.AsBool())
}

// Value is what a provider measured. Values empty, a non-finite value or
// NoData set ⇒ no data (Inconclusive).
type Value struct {
	Values   []float64
	IsVector bool   // result is a list (a Prometheus vector / JSON array)
	Samples  int64  // the sample count; -1 when the provider does not know it
	NoData   string // a reason the provider saw no data (e.g. probe inconclusive)
}

// Measurement is one measurement of a metric.
type Measurement struct {
	Phase    Phase     `json:"phase"`
	AtUnixMs int64     `json:"at_unix_ms"`
	Values   []float64 `json:"values,omitempty"`
	Samples  int64     `json:"samples"`
	Reason   string    `json:"reason"`
}

// noData returns why v carries no usable data ("" when it does).
func noData(m *Metric, v Value) string {
	switch {
	case v.NoData != "":
		return "no data: " + clip(v.NoData, 200)
	case len(v.Values) == 0:
		return "no data: empty result"
	}
	for _, f := range v.Values {
		if !finite(f) {
			return "no data: result is " + strconv.FormatFloat(f, 'g', -1, 64)
		}
	}
	if m.MinSamples > 0 {
		if v.Samples < 0 {
			return "no data: sample count unknown"
		}
		if v.Samples < m.MinSamples {
			return fmt.Sprintf("no data: %d samples < minSamples %d", v.Samples, m.MinSamples)
		}
	}
	return ""
}

// evaluate turns a provider's answer into a measurement phase with Argo's
// condition rules: failure met ⇒ Failed; success met ⇒ Successful; only a
// success condition and it is not met ⇒ Failed; only a failure condition and
// it is not met ⇒ Successful; neither met ⇒ Inconclusive. No data is
// Inconclusive before any condition is evaluated (so `result[0]` on an empty
// vector is never an index error and NaN is never 0).
func evaluate(m *Metric, v Value, qerr error) (Phase, string) {
	if qerr != nil {
		return Error, "query error: " + clip(qerr.Error(), 300)
	}
	if r := noData(m, v); r != "" {
		return Inconclusive, r
	}
	var result any
	if v.IsVector {
		result = append([]float64(nil), v.Values...)
	} else if len(v.Values) == 1 {
		result = v.Values[0]
	} else {
		result = append([]float64(nil), v.Values...)
	}
	eval := func(cond string) (bool, error) {
		if cond == "" {
			return false, nil
		}
		p, err := compile(cond)
		if err != nil {
			return false, err
		}
		out, err := expr.Run(p, env{Result: result})
		if err != nil {
			return false, err
		}
		b, _ := out.(bool)
		return b, nil
	}
	fail, err := eval(m.FailureCondition)
	if err != nil {
		return Error, "failureCondition: " + clip(err.Error(), 300)
	}
	succ, err := eval(m.SuccessCondition)
	if err != nil {
		return Error, "successCondition: " + clip(err.Error(), 300)
	}
	val := fmtValues(v)
	switch {
	case fail:
		return Failed, fmt.Sprintf("result %s met failureCondition %q", val, clip(m.FailureCondition, 200))
	case succ:
		return Successful, fmt.Sprintf("result %s met successCondition %q", val, clip(m.SuccessCondition, 200))
	case m.FailureCondition == "":
		return Failed, fmt.Sprintf("result %s did not meet successCondition %q", val, clip(m.SuccessCondition, 200))
	case m.SuccessCondition == "":
		return Successful, fmt.Sprintf("result %s did not meet failureCondition %q", val, clip(m.FailureCondition, 200))
	}
	return Inconclusive, fmt.Sprintf("result %s met neither condition", val)
}

func fmtValues(v Value) string {
	var b strings.Builder
	if v.IsVector || len(v.Values) != 1 {
		b.WriteByte('[')
	}
	for i, f := range v.Values {
		if i == 8 {
			fmt.Fprintf(&b, " …%d more", len(v.Values)-8)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatFloat(f, 'g', 6, 64))
	}
	if v.IsVector || len(v.Values) != 1 {
		b.WriteByte(']')
	}
	return b.String()
}

// MetricResult is a metric's measurements and phase.
type MetricResult struct {
	Name               string        `json:"name"`
	DryRun             bool          `json:"dry_run"`
	Phase              Phase         `json:"phase"`
	Message            string        `json:"message"`
	Count              int           `json:"count"`
	Successful         int           `json:"successful"`
	Failed             int           `json:"failed"`
	Inconclusive       int           `json:"inconclusive"`
	Error              int           `json:"error"`
	ConsecutiveError   int           `json:"consecutive_error"`
	ConsecutiveSuccess int           `json:"consecutive_success"`
	Measurements       []Measurement `json:"measurements"`
}

// record adds a measurement and updates the counters.
func (r *MetricResult) record(ms Measurement) {
	r.Measurements = append(r.Measurements, ms)
	r.Count++
	switch ms.Phase {
	case Successful:
		r.Successful++
		r.ConsecutiveSuccess++
		r.ConsecutiveError = 0
	case Failed:
		r.Failed++
		r.ConsecutiveSuccess, r.ConsecutiveError = 0, 0
	case Inconclusive:
		r.Inconclusive++
		r.ConsecutiveSuccess, r.ConsecutiveError = 0, 0
	case Error:
		r.Error++
		r.ConsecutiveError++
		r.ConsecutiveSuccess = 0
	}
}

// assess computes the metric phase with Argo's rules (assessMetricStatus):
// more failures than failureLimit ⇒ Failed; more inconclusive than
// inconclusiveLimit ⇒ Inconclusive; more consecutive errors than
// consecutiveErrorLimit ⇒ Error; count reached ⇒ Successful — except that,
// unlike Argo, a completed metric is Successful only with at least one
// successful measurement and the last consecutiveSuccesses measurements
// successful (hysteresis); otherwise it is Inconclusive: no data never
// passes. terminating (the run is ending early or was cancelled) makes an
// unfinished metric Inconclusive, not Successful as in Argo.
func assess(m *Metric, r *MetricResult, terminating bool) (Phase, string) {
	if r.Failed > m.failureLimit() {
		return Failed, fmt.Sprintf("%d failed measurement(s) > failureLimit %d; last: %s", r.Failed, m.failureLimit(), lastReason(r, Failed))
	}
	if r.Inconclusive > m.inconclusiveLimit() {
		return Inconclusive, fmt.Sprintf("%d inconclusive measurement(s) > inconclusiveLimit %d; last: %s", r.Inconclusive, m.inconclusiveLimit(), lastReason(r, Inconclusive))
	}
	if r.ConsecutiveError > m.consecErrLimit() {
		return Error, fmt.Sprintf("%d consecutive errors > consecutiveErrorLimit %d; last: %s", r.ConsecutiveError, m.consecErrLimit(), lastReason(r, Error))
	}
	if r.Count >= m.Count {
		if r.Successful == 0 {
			return Inconclusive, fmt.Sprintf("no successful measurement in %d (no data never passes)", r.Count)
		}
		if r.ConsecutiveSuccess < m.ConsecutiveSuccesses {
			return Inconclusive, fmt.Sprintf("only %d consecutive successes at the end < consecutiveSuccesses %d", r.ConsecutiveSuccess, m.ConsecutiveSuccesses)
		}
		return Successful, fmt.Sprintf("%d of %d measurements successful", r.Successful, r.Count)
	}
	if terminating {
		return Inconclusive, fmt.Sprintf("stopped after %d of %d measurements", r.Count, m.Count)
	}
	if r.Count == 0 {
		return Pending, "no measurement yet"
	}
	return Running, fmt.Sprintf("%d of %d measurements", r.Count, m.Count)
}

func lastReason(r *MetricResult, p Phase) string {
	for i := len(r.Measurements) - 1; i >= 0; i-- {
		if r.Measurements[i].Phase == p {
			return r.Measurements[i].Reason
		}
	}
	return ""
}

// runPhase is the worst phase among the deciding (non-dryRun) metrics.
// ended reports whether the run is over: every deciding metric completed,
// or one completed with a phase other than Successful (Argo terminates the
// run then).
func runPhase(metrics []Metric, rs []MetricResult) (phase Phase, ended bool, msg string) {
	phase = Successful
	allDone, bad := true, false
	for i := range rs {
		if metrics[i].DryRun {
			continue
		}
		p := rs[i].Phase
		if !p.Completed() {
			allDone = false
			continue
		}
		if p != Successful {
			bad = true
		}
		if Worse(p, phase) {
			phase = p
			msg = fmt.Sprintf("metric %q %s: %s", rs[i].Name, strings.ToLower(string(p)), rs[i].Message)
		}
	}
	if !allDone && !bad {
		return Running, false, ""
	}
	if phase == Successful {
		msg = "every metric successful"
	}
	return phase, true, msg
}
