# Mutation proof for release/analysis: each mechanism is removed in turn and
# the package tests must fail ("CAUGHT"). Run from release/analysis:
#   python3 testdata/mutations.py
# The files are restored after each mutation.
import subprocess, sys
muts = [
 ("no-data NaN treated as data (NaN as value)", "eval.go", "		if !finite(f) {\n			return \"no data: result is \"", "		if false && !finite(f) {\n			return \"no data: result is \""),
 ("empty result not no data (index error path)", "eval.go", "	case len(v.Values) == 0:\n		return \"no data: empty result\"", "	case false:\n		return \"no data: empty result\""),
 ("minSamples guard removed", "eval.go", "		if v.Samples < m.MinSamples {", "		if false {"),
 ("no-success-never-passes removed (Argo: count reached ⇒ Successful)", "eval.go", "		if r.Successful == 0 {", "		if false {"),
 ("hysteresis removed", "eval.go", "		if r.ConsecutiveSuccess < m.ConsecutiveSuccesses {", "		if false {"),
 ("failureLimit off by one (>=)", "eval.go", "	if r.Failed > m.failureLimit() {", "	if r.Failed >= m.failureLimit() && r.Failed > 0 && r.Failed > m.failureLimit()-1 {"),
 ("inconclusiveLimit ignored", "eval.go", "	if r.Inconclusive > m.inconclusiveLimit() {", "	if false {"),
 ("consecutive errors not reset by success", "eval.go", "		r.ConsecutiveSuccess++\n		r.ConsecutiveError = 0", "		r.ConsecutiveSuccess++"),
 ("errors counted as failures", "eval.go", "	case Error:\n		r.Error++", "	case Error:\n		r.Failed++\n		r.Error++"),
 ("dryRun decides", "eval.go", "		if metrics[i].DryRun {\n			continue\n		}\n		p := rs[i].Phase", "		p := rs[i].Phase"),
 ("worst-of: Error ranked above Failed", "eval.go", "	case Failed:\n		return 5\n	case Error:\n		return 4", "	case Failed:\n		return 4\n	case Error:\n		return 5"),
 ("cancelled/terminated unfinished metric passes (Argo)", "eval.go", "	if terminating {\n		return Inconclusive", "	if terminating {\n		return Successful"),
 ("no-data guards skipped for non-empty results (NaN/Inf/minSamples)", "eval.go", "func noData(m *Metric, v Value) string {\n", "func noData(m *Metric, v Value) string {\n\tif len(v.Values) > 0 {\n\t\treturn \"\"\n\t}\n"),
 ("no data treated as 0", "eval.go", "	if r := noData(m, v); r != \"\" {\n		return Inconclusive, r\n	}", "	if r := noData(m, v); r != \"\" {\n		v = Value{Values: []float64{0}, Samples: v.Samples}\n	}"),
 ("probe inconclusive mapped to 0", "providers.go", "		return Value{Samples: v.Runs, NoData: \"probe verdict inconclusive: \" + clip(v.Reason, 150)}, nil", "		return Value{Values: []float64{0}, Samples: v.Runs}, nil"),
 ("no body bound", "providers.go", "	if len(body) > MaxResponseBytes {", "	if false {"),
 ("web missing key is 0", "providers.go", "				return Value{NoData: \"jsonPath selects nothing\"}, nil\n			}\n			cur = v", "				return Value{Values: []float64{0}}, nil\n			}\n			cur = v"),
]
sel = sys.argv[1:]  # optional filter
for name, f, old, new in muts:
    src = open(f).read()
    assert src.count(old) == 1, (name, src.count(old))
    open(f, "w").write(src.replace(old, new))
    try:
        r = subprocess.run(["go", "test", "-count=1", "-run", "Rules|Worst|Schedule|Cancel|Parse|JSONPath|Probe|Web|Simulated", "./"], capture_output=True, text=True)
        fails = [l.strip() for l in r.stdout.splitlines() if l.strip().startswith("--- FAIL")]
        print(("CAUGHT " if r.returncode else "MISSED ") + name + ": " + "; ".join(fails[:12]))
    finally:
        open(f, "w").write(src)
