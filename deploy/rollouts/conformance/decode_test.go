package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	rollouts "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	flagger "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// templatesDir holds the versioned templates (deploy/rollouts/v1, …).
const templatesDir = ".."

// annotationSchema is the annotation schema of docs/ROLLOUTS-TEMPLATES.md:
// key → a check of its value (nil: any non-empty value), and whether
// every Rollout must carry it.
var annotationSchema = map[string]struct {
	re       *regexp.Regexp
	required bool
}{
	"release.aerodb.dev/template":         {regexp.MustCompile(`^(web-api|worker|database-proxy)$`), true},
	"release.aerodb.dev/template-version": {regexp.MustCompile(`^v[0-9]+$`), true},
	"release.aerodb.dev/domain":           {regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`), true},
	"release.aerodb.dev/digest":           {regexp.MustCompile(`^sha256:[0-9a-f]{64}$`), false},
	"release.aerodb.dev/environment":      {regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`), true},
	"release.aerodb.dev/authority-url":    {regexp.MustCompile(`^https?://[a-z0-9.-]+(:[0-9]+)?$`), true},
	"release.aerodb.dev/probe-url":        {regexp.MustCompile(`^https?://[a-z0-9.-]+(:[0-9]+)?$`), false},
	"release.aerodb.dev/probe-flow":       {regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`), false},
	"release.aerodb.dev/required-metrics": {regexp.MustCompile(`^[a-z0-9-]+(,[a-z0-9-]+)*$`), true},
	"release.aerodb.dev/bake-window":      {regexp.MustCompile(`^[0-9]+(m|h)$`), false},
}

// doc is one YAML document of a template file.
type doc struct {
	file string
	n    int
	json []byte
	kind string
}

func (d doc) String() string { return fmt.Sprintf("%s#%d (%s)", d.file, d.n, d.kind) }

// readDocs splits every *.yaml under dir into documents, converted to
// JSON strictly (duplicate keys are errors).
func readDocs(t *testing.T, dir string) []doc {
	t.Helper()
	var out []doc
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && e.Name() == "conformance" {
			return filepath.SkipDir
		}
		// analysis.yaml: the rollout controller's format (templates_test.go).
		if e.IsDir() || !strings.HasSuffix(p, ".yaml") || e.Name() == "analysis.yaml" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		ds, err := splitDocs(p, b)
		if err != nil {
			return err
		}
		out = append(out, ds...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func splitDocs(name string, b []byte) ([]doc, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []doc
	for n := 0; ; n++ {
		y, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		if len(bytes.TrimSpace(stripComments(y))) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSONStrict(y)
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		var meta struct{ APIVersion, Kind string }
		if err := json.Unmarshal(j, &meta); err != nil {
			return nil, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		out = append(out, doc{file: name, n: n, json: j, kind: meta.APIVersion + "/" + meta.Kind})
	}
}

func stripComments(y []byte) []byte {
	var b bytes.Buffer
	for _, l := range bytes.Split(y, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			b.Write(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// strict decodes JSON into v, refusing unknown fields and trailing data.
func strict(j []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// decoded holds every template, by kind.
type decoded struct {
	rollouts  map[string]*rollouts.Rollout // by file
	templates map[string]*rollouts.AnalysisTemplate
	cluster   map[string]*rollouts.ClusterAnalysisTemplate
	canaries  []*flagger.Canary
	metricTs  map[string]*flagger.MetricTemplate
	where     map[any]doc
}

func decodeAll(docs []doc) (*decoded, []error) {
	d := &decoded{rollouts: map[string]*rollouts.Rollout{}, templates: map[string]*rollouts.AnalysisTemplate{},
		cluster: map[string]*rollouts.ClusterAnalysisTemplate{}, metricTs: map[string]*flagger.MetricTemplate{}, where: map[any]doc{}}
	var errs []error
	for _, x := range docs {
		var v any
		switch x.kind {
		case "argoproj.io/v1alpha1/Rollout":
			v = &rollouts.Rollout{}
		case "argoproj.io/v1alpha1/AnalysisTemplate":
			v = &rollouts.AnalysisTemplate{}
		case "argoproj.io/v1alpha1/ClusterAnalysisTemplate":
			v = &rollouts.ClusterAnalysisTemplate{}
		case "flagger.app/v1beta1/Canary":
			v = &flagger.Canary{}
		case "flagger.app/v1beta1/MetricTemplate":
			v = &flagger.MetricTemplate{}
		default:
			errs = append(errs, fmt.Errorf("%v: unexpected kind", x))
			continue
		}
		if err := strict(x.json, v); err != nil {
			errs = append(errs, fmt.Errorf("%v: %w", x, err))
			continue
		}
		d.where[v] = x
		switch o := v.(type) {
		case *rollouts.Rollout:
			d.rollouts[x.file] = o
		case *rollouts.AnalysisTemplate:
			if _, dup := d.templates[o.Name]; dup {
				errs = append(errs, fmt.Errorf("%v: AnalysisTemplate %q defined twice", x, o.Name))
			}
			d.templates[o.Name] = o
		case *rollouts.ClusterAnalysisTemplate:
			if _, dup := d.cluster[o.Name]; dup {
				errs = append(errs, fmt.Errorf("%v: ClusterAnalysisTemplate %q defined twice", x, o.Name))
			}
			d.cluster[o.Name] = o
		case *flagger.Canary:
			d.canaries = append(d.canaries, o)
		case *flagger.MetricTemplate:
			d.metricTs[o.Namespace+"/"+o.Name] = o
		}
	}
	return d, errs
}

// Acceptance item 6: every template decodes strictly into Argo Rollouts'
// and Flagger's own types, and hangs together.
func TestTemplatesDecodeStrictly(t *testing.T) {
	docs := readDocs(t, templatesDir)
	d, errs := decodeAll(docs)
	for _, err := range errs {
		t.Error(err)
	}
	t.Logf("%d documents: %d Rollouts, %d AnalysisTemplates, %d ClusterAnalysisTemplates, %d Canaries, %d MetricTemplates",
		len(docs), len(d.rollouts), len(d.templates), len(d.cluster), len(d.canaries), len(d.metricTs))
	for _, want := range []string{"web-api", "worker", "database-proxy"} {
		if _, ok := d.rollouts[filepath.Join(templatesDir, "v1", want, "rollouts.yaml")]; !ok {
			t.Errorf("no Rollout for service type %s in v1/%s/rollouts.yaml", want, want)
		}
	}
	if len(d.canaries) == 0 {
		t.Error("no Flagger Canary example")
	}
	for _, r := range d.rollouts {
		checkRollout(t, d, r)
	}
	for _, c := range d.canaries {
		checkCanary(t, d, c)
	}
	for name, at := range d.templates {
		checkMetrics(t, "AnalysisTemplate "+name, at.Spec.Metrics)
	}
	for name, at := range d.cluster {
		checkMetrics(t, "ClusterAnalysisTemplate "+name, at.Spec.Metrics)
	}
}

func checkAnnotations(t *testing.T, what string, ann map[string]string, rollout bool) {
	t.Helper()
	for k, v := range ann {
		s, ok := annotationSchema[k]
		if !strings.HasPrefix(k, "release.aerodb.dev/") {
			continue
		}
		if !ok {
			t.Errorf("%s: annotation %s is not in the schema", what, k)
			continue
		}
		if !s.re.MatchString(v) {
			t.Errorf("%s: annotation %s=%q does not match %s", what, k, v, s.re)
		}
	}
	for k, s := range annotationSchema {
		if _, ok := ann[k]; s.required && !ok {
			t.Errorf("%s: required annotation %s missing", what, k)
		}
	}
	if rollout {
		if _, ok := ann["release.aerodb.dev/digest"]; !ok {
			t.Errorf("%s: a Rollout needs release.aerodb.dev/digest (the analysis args read it)", what)
		}
	}
}

func checkRollout(t *testing.T, d *decoded, r *rollouts.Rollout) {
	t.Helper()
	what := d.where[r].String()
	checkAnnotations(t, what, r.Annotations, true)
	dom, digest, authURL := r.Annotations["release.aerodb.dev/domain"], r.Annotations["release.aerodb.dev/digest"], r.Annotations["release.aerodb.dev/authority-url"]
	if r.Annotations["release.aerodb.dev/template"] != r.Name {
		t.Errorf("%s: template annotation %q, Rollout named %q", what, r.Annotations["release.aerodb.dev/template"], r.Name)
	}
	if !strings.Contains(what, "/"+r.Annotations["release.aerodb.dev/template-version"]+"/") {
		t.Errorf("%s: template-version annotation does not match its directory", what)
	}
	for _, c := range r.Spec.Template.Spec.Containers {
		if !strings.HasSuffix(c.Image, "@"+digest) {
			t.Errorf("%s: container %s image %s is not pinned to the digest annotation %s", what, c.Name, c.Image, digest)
		}
	}
	cs := r.Spec.Strategy.Canary
	if cs == nil {
		t.Fatalf("%s: not a canary strategy", what)
	}
	// Every analysis references templates that exist, with every argument
	// without a default supplied; the authority's domain is the annotation's.
	checkAnalysis := func(step string, templates []rollouts.AnalysisTemplateRef, args []rollouts.AnalysisRunArgument) {
		given := map[string]rollouts.AnalysisRunArgument{}
		for _, a := range args {
			given[a.Name] = a
		}
		for _, ref := range templates {
			var targs []rollouts.Argument
			if ref.ClusterScope != nil && *ref.ClusterScope {
				ct, ok := d.cluster[ref.TemplateName]
				if !ok {
					t.Errorf("%s %s: ClusterAnalysisTemplate %q not found", what, step, ref.TemplateName)
					continue
				}
				targs = ct.Spec.Args
			} else {
				at, ok := d.templates[ref.TemplateName]
				if !ok {
					t.Errorf("%s %s: AnalysisTemplate %q not found", what, step, ref.TemplateName)
					continue
				}
				targs = at.Spec.Args
			}
			for _, ta := range targs {
				if _, ok := given[ta.Name]; !ok && ta.Value == nil {
					t.Errorf("%s %s: template %s needs argument %q", what, step, ref.TemplateName, ta.Name)
				}
			}
		}
		if a, ok := given["domain"]; ok && a.Value != dom {
			t.Errorf("%s %s: domain argument %q, annotation %q", what, step, a.Value, dom)
		}
		if a, ok := given["authority-url"]; ok && a.Value != authURL {
			t.Errorf("%s %s: authority-url argument %q, annotation %q", what, step, a.Value, authURL)
		}
		if a, ok := given["digest"]; ok && (a.ValueFrom == nil || a.ValueFrom.FieldRef == nil ||
			a.ValueFrom.FieldRef.FieldPath != "metadata.annotations['release.aerodb.dev/digest']") {
			t.Errorf("%s %s: the digest argument must come from the digest annotation", what, step)
		}
	}
	if cs.Analysis == nil || !slices.ContainsFunc(cs.Analysis.Templates, func(r rollouts.AnalysisTemplateRef) bool {
		return r.TemplateName == "aerodb-authority-abort-gate"
	}) {
		t.Errorf("%s: no background aerodb-authority-abort-gate analysis", what)
	} else {
		checkAnalysis("background analysis", cs.Analysis.Templates, cs.Analysis.Args)
	}
	lastWeight := int32(0)
	for i, s := range cs.Steps {
		if s.SetWeight != nil {
			if *s.SetWeight <= lastWeight || *s.SetWeight > 100 {
				t.Errorf("%s step %d: weight %d after %d", what, i, *s.SetWeight, lastWeight)
			}
			lastWeight = *s.SetWeight
		}
		if s.Analysis != nil {
			checkAnalysis("step "+strconv.Itoa(i), s.Analysis.Templates, s.Analysis.Args)
		}
	}
	if n := len(cs.Steps); n == 0 || cs.Steps[n-1].Analysis == nil ||
		!slices.ContainsFunc(cs.Steps[n-1].Analysis.Templates, func(r rollouts.AnalysisTemplateRef) bool {
			return r.TemplateName == "aerodb-authority-verdict" && r.ClusterScope != nil && *r.ClusterScope
		}) {
		t.Errorf("%s: the last step must be the authority's promotion gate (aerodb-authority-verdict)", what)
	}
	// The required metrics exist in the canary health template it uses.
	have := map[string]bool{}
	for _, s := range cs.Steps {
		if s.Analysis == nil {
			continue
		}
		for _, ref := range s.Analysis.Templates {
			if at, ok := d.templates[ref.TemplateName]; ok && (ref.ClusterScope == nil || !*ref.ClusterScope) {
				for _, m := range at.Spec.Metrics {
					have[m.Name] = true
				}
			}
		}
	}
	for _, m := range strings.Split(r.Annotations["release.aerodb.dev/required-metrics"], ",") {
		if !have[m] {
			t.Errorf("%s: required metric %q is not measured by any analysis step", what, m)
		}
	}
}

var verdictURL = regexp.MustCompile(`^\{\{args\.authority-url\}\}/v1/releases/\{\{args\.domain\}\}/verdict\?digest=\{\{args\.digest\}\}$`)

func checkMetrics(t *testing.T, what string, ms []rollouts.Metric) {
	t.Helper()
	if len(ms) == 0 {
		t.Errorf("%s: no metrics", what)
	}
	for _, m := range ms {
		w := what + " metric " + m.Name
		if m.SuccessCondition == "" && m.FailureCondition == "" {
			t.Errorf("%s: neither condition", w)
		}
		if m.Count == nil || m.Count.IntValue() < 1 || m.Count.IntValue() > 1000 {
			t.Errorf("%s: count must be 1..1000 (an analysis always ends)", w)
		}
		if m.Interval == "" && m.Count != nil && m.Count.IntValue() > 1 {
			t.Errorf("%s: count > 1 without an interval", w)
		}
		if web := m.Provider.Web; web != nil {
			if strings.Contains(web.URL, "/v1/releases/") && !verdictURL.MatchString(web.URL) {
				t.Errorf("%s: authority verdict URL %q", w, web.URL)
			}
			if web.JSONPath != "{$.verdict}" {
				t.Errorf("%s: jsonPath %q, want {$.verdict}", w, web.JSONPath)
			}
			if !strings.Contains(m.SuccessCondition+m.FailureCondition, `"fail"`) && !strings.Contains(m.SuccessCondition, `"pass"`) {
				t.Errorf("%s: conditions do not read the verdict", w)
			}
		}
		if p := m.Provider.Prometheus; p != nil {
			// An empty result must be Inconclusive (neither condition met),
			// never an index error that counts as a query error.
			for _, c := range []string{m.SuccessCondition, m.FailureCondition} {
				if strings.Contains(c, "result[0]") && !strings.Contains(c, "len(result) > 0 &&") {
					t.Errorf("%s: %q indexes result without a len guard", w, c)
				}
			}
			if p.Timeout == nil || *p.Timeout < 1 || *p.Timeout > 60 {
				t.Errorf("%s: prometheus timeout must be 1..60 s", w)
			}
		}
	}
}

var gateURL = regexp.MustCompile(`^(https?://[a-z0-9.-]+(?::[0-9]+)?)/v1/releases/([a-z0-9._-]+)/gates/([a-z-]+)$`)

func checkCanary(t *testing.T, d *decoded, c *flagger.Canary) {
	t.Helper()
	what := d.where[c].String()
	checkAnnotations(t, what, c.Annotations, false)
	if c.Spec.Analysis == nil {
		t.Fatalf("%s: no analysis", what)
	}
	types := map[flagger.HookType]bool{}
	for _, h := range c.Spec.Analysis.Webhooks {
		m := gateURL.FindStringSubmatch(h.URL)
		if m == nil {
			continue
		}
		types[h.Type] = true
		if m[1] != c.Annotations["release.aerodb.dev/authority-url"] || m[2] != c.Annotations["release.aerodb.dev/domain"] || m[3] != string(h.Type) {
			t.Errorf("%s: webhook %s (%s) asks %s: want the annotated authority, domain and the gate named as its type", what, h.Name, h.Type, h.URL)
		}
	}
	for _, want := range []flagger.HookType{flagger.ConfirmRolloutHook, flagger.ConfirmPromotionHook, flagger.RollbackHook} {
		if !types[want] {
			t.Errorf("%s: no %s webhook to the authority", what, want)
		}
	}
	for _, m := range c.Spec.Analysis.Metrics {
		if m.TemplateRef != nil {
			if _, ok := d.metricTs[m.TemplateRef.Namespace+"/"+m.TemplateRef.Name]; !ok {
				t.Errorf("%s: metric %s references MetricTemplate %s/%s, not found", what, m.Name, m.TemplateRef.Namespace, m.TemplateRef.Name)
			}
		}
	}
}

// Strictness is real: a misspelt field, a field at the wrong level and a
// duplicate key in an otherwise valid template are each refused.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(templatesDir, "v1", "web-api", "rollouts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(string) string{
		"misspelt limit": func(s string) string { return strings.Replace(s, "failureLimit: 1", "failureLimt: 1", 1) },
		"misplaced field": func(s string) string {
			return strings.Replace(s, "  replicas: 6\n", "  replicas: 6\n  canaryService: x\n", 1)
		},
		"unknown step": func(s string) string { return strings.Replace(s, "- setWeight: 5", "- setWeigth: 5", 1) },
		"duplicate key": func(s string) string {
			return strings.Replace(s, "  replicas: 6\n", "  replicas: 6\n  replicas: 7\n", 1)
		},
		"unknown web field": func(s string) string {
			return strings.Replace(s, "timeout: 10\n", "timeout: 10\n          insecureSkip: true\n", 1)
		},
	} {
		m := mut(string(b))
		if m == string(b) {
			t.Fatalf("%s: mutation did not apply", name)
		}
		docs, err := splitDocs("mutated", []byte(m))
		if err != nil {
			t.Logf("%s: refused: %v", name, err)
			continue
		}
		if _, errs := decodeAll(docs); len(errs) == 0 {
			t.Errorf("%s: decoded without an error", name)
		} else {
			t.Logf("%s: refused: %v", name, errs[0])
		}
	}
}

// Every annotation of the schema is documented.
func TestAnnotationSchemaDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(templatesDir, "..", "..", "docs", "ROLLOUTS-TEMPLATES.md"))
	if err != nil {
		t.Fatal(err)
	}
	for k := range annotationSchema {
		if !bytes.Contains(b, []byte("`"+k+"`")) {
			t.Errorf("docs/ROLLOUTS-TEMPLATES.md does not document %s", k)
		}
	}
}
