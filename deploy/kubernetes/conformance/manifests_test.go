package conformance

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// deployDir is deploy/, two levels up from this module.
var deployDir = filepath.Join("..", "..")

// objects is what a set of manifests decodes to.
type objects struct {
	namespaces      []*corev1.Namespace
	secrets         []*corev1.Secret
	services        []*corev1.Service
	statefulSets    []*appsv1.StatefulSet
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*monitoringv1.ServiceMonitor
}

// decodeStrict decodes every YAML document of b into its Kubernetes Go
// type, refusing unknown fields, unknown kinds and wrong API versions.
func decodeStrict(t *testing.T, name string, b []byte, into *objects) {
	t.Helper()
	for i, doc := range splitDocs(b) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s document %d: %v", name, i, err)
		}
		var obj any
		var wantAPI string
		switch tm.Kind {
		case "Namespace":
			o := &corev1.Namespace{}
			into.namespaces, obj, wantAPI = append(into.namespaces, o), o, "v1"
		case "Secret":
			o := &corev1.Secret{}
			into.secrets, obj, wantAPI = append(into.secrets, o), o, "v1"
		case "Service":
			o := &corev1.Service{}
			into.services, obj, wantAPI = append(into.services, o), o, "v1"
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			into.statefulSets, obj, wantAPI = append(into.statefulSets, o), o, "apps/v1"
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			into.pdbs, obj, wantAPI = append(into.pdbs, o), o, "policy/v1"
		case "ServiceMonitor":
			o := &monitoringv1.ServiceMonitor{}
			into.serviceMonitors, obj, wantAPI = append(into.serviceMonitors, o), o, "monitoring.coreos.com/v1"
		default:
			t.Fatalf("%s document %d: unexpected kind %q", name, i, tm.Kind)
		}
		if tm.APIVersion != wantAPI {
			t.Errorf("%s %s: apiVersion %q, want %q", name, tm.Kind, tm.APIVersion, wantAPI)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Errorf("%s %s: strict decode: %v", name, tm.Kind, err)
		}
	}
}

// splitDocs splits a YAML stream into its non-empty documents.
func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), b...), []byte("\n---")) {
		keep := false
		for _, line := range strings.Split(string(d), "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				keep = true
			}
		}
		if keep {
			out = append(out, d)
		}
	}
	return out
}

func loadManifests(t *testing.T) objects {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*.yaml"))
	if err != nil || len(files) < 6 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	var o objects
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		decodeStrict(t, filepath.Base(f), b, &o)
	}
	return o
}

// renderChart renders deploy/helm/authority with Helm's Go engine.
func renderChart(t *testing.T, release, namespace string, values map[string]any) (objects, map[string]string) {
	t.Helper()
	chrt, err := loader.Load(filepath.Join(deployDir, "helm", "authority"))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(chrt, values, common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(chrt, vals)
	if err != nil {
		t.Fatal(err)
	}
	var o objects
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if strings.HasSuffix(name, ".yaml") {
			decodeStrict(t, name, []byte(out[name]), &o)
		}
	}
	return o, out
}

// checkInvariants: what every rendering of the cluster must keep.
func checkInvariants(t *testing.T, what string, o objects, replicas int) {
	t.Helper()
	if len(o.statefulSets) != 1 || len(o.pdbs) != 1 || len(o.services) != 2 {
		t.Fatalf("%s: %d StatefulSets, %d PDBs, %d Services", what, len(o.statefulSets), len(o.pdbs), len(o.services))
	}
	ss := o.statefulSets[0]
	sp := ss.Spec
	if sp.Replicas == nil || int(*sp.Replicas) != replicas {
		t.Errorf("%s: replicas %v, want %d", what, sp.Replicas, replicas)
	}
	if sp.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("%s: podManagementPolicy %q: the servers must start together (none is ready before a leader exists)", what, sp.PodManagementPolicy)
	}
	sel, err := metav1.LabelSelectorAsSelector(sp.Selector)
	if err != nil || !sel.Matches(labels.Set(sp.Template.Labels)) {
		t.Errorf("%s: selector %v does not match the pod labels %v", what, sp.Selector, sp.Template.Labels)
	}
	var headless *corev1.Service
	for _, s := range o.services {
		if s.Name == sp.ServiceName {
			headless = s
		}
	}
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: serviceName %q must be a headless Service publishing not-ready addresses", what, sp.ServiceName)
	}
	for _, s := range o.services {
		if !labelSelectorMatches(s.Spec.Selector, sp.Template.Labels) {
			t.Errorf("%s: Service %s selects %v, not the pods %v", what, s.Name, s.Spec.Selector, sp.Template.Labels)
		}
	}
	pod := sp.Template.Spec
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: the pod must run as a non-root user: %+v", what, psc)
	}
	aa := pod.Affinity
	if aa == nil || aa.PodAntiAffinity == nil {
		t.Fatalf("%s: no pod anti-affinity", what)
	}
	terms := aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	for _, w := range aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, w.PodAffinityTerm)
	}
	if len(terms) != 1 || terms[0].TopologyKey != "kubernetes.io/hostname" || terms[0].LabelSelector == nil ||
		!labelSelectorMatches(terms[0].LabelSelector.MatchLabels, sp.Template.Labels) {
		t.Errorf("%s: anti-affinity must spread the servers over nodes: %+v", what, terms)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers", what, len(pod.Containers))
	}
	c := pod.Containers[0]
	csc := c.SecurityContext
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || csc.ReadOnlyRootFilesystem == nil ||
		!*csc.ReadOnlyRootFilesystem || csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: container security context %+v", what, csc)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s: %s probe %+v, want GET %s", what, pr.name, pr.probe, pr.path)
			continue
		}
		// kubelet has no client certificate: the probes use the plaintext
		// --metrics-addr listener (health, readiness, metrics only).
		port := pr.probe.HTTPGet.Port.IntVal
		if pr.probe.HTTPGet.Port.StrVal != "" {
			port = ports[pr.probe.HTTPGet.Port.StrVal]
		}
		if port == 0 || !slices.Contains(c.Args, fmt.Sprintf("--metrics-addr=0.0.0.0:%d", port)) {
			t.Errorf("%s: %s probe on port %v, which is not the --metrics-addr port (%v)", what, pr.name, pr.probe.HTTPGet.Port, c.Args)
		}
	}
	var peers []string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--peer="); ok {
			peers = append(peers, strings.Split(v, ",")[0])
		}
	}
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("%s-%d", ss.Name, i))
	}
	if !slices.Equal(peers, want) {
		t.Errorf("%s: peers %v, want the pod names %v", what, peers, want)
	}
	for _, flag := range []string{"--node-id=$(POD_NAME)", "--bootstrap", "--cacert=/etc/authority/tls/ca.crt",
		"--cert=/etc/authority/tls/server-$(POD_NAME).crt", "--key=/etc/authority/tls/server-$(POD_NAME).key", "--data-dir=/var/lib/authority"} {
		if !slices.Contains(c.Args, flag) {
			t.Errorf("%s: missing %s in %v", what, flag, c.Args)
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["data"] != "/var/lib/authority" || len(sp.VolumeClaimTemplates) != 1 || sp.VolumeClaimTemplates[0].Name != "data" {
		t.Errorf("%s: the data dir must be a persistent volume claim: %v", what, mounts)
	}
	tlsSecret := ""
	for _, v := range pod.Volumes {
		if v.Name == "tls" && v.Secret != nil {
			tlsSecret = v.Secret.SecretName
		}
	}
	if tlsSecret == "" || mounts["tls"] != "/etc/authority/tls" {
		t.Errorf("%s: the certificates must come from a Secret mounted at /etc/authority/tls", what)
	}
	pdb := o.pdbs[0].Spec
	if pdb.MaxUnavailable == nil || pdb.MaxUnavailable.IntValue() != 1 || pdb.MinAvailable != nil ||
		!labelSelectorMatches(pdb.Selector.MatchLabels, sp.Template.Labels) {
		t.Errorf("%s: PodDisruptionBudget %+v: at most one server down, selecting the pods", what, pdb)
	}
	for _, sm := range o.serviceMonitors {
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("%s: ServiceMonitor endpoints %+v", what, sm.Spec.Endpoints)
		}
		if !labelSelectorMatches(sm.Spec.Selector.MatchLabels, headless.Labels) {
			t.Errorf("%s: ServiceMonitor selects %v, not the headless Service %v", what, sm.Spec.Selector.MatchLabels, headless.Labels)
		}
	}
}

func labelSelectorMatches(sel, have map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if have[k] != v {
			return false
		}
	}
	return true
}

func TestManifestsDecodeStrictly(t *testing.T) {
	o := loadManifests(t)
	checkInvariants(t, "kubernetes/", o, 3)
	if len(o.namespaces) != 1 || len(o.secrets) != 1 || len(o.serviceMonitors) != 1 {
		t.Errorf("namespaces %d, secrets %d, service monitors %d", len(o.namespaces), len(o.secrets), len(o.serviceMonitors))
	}
	want := []string{"ca.crt"}
	for i := range 3 {
		want = append(want, fmt.Sprintf("server-authority-%d.crt", i), fmt.Sprintf("server-authority-%d.key", i))
	}
	for _, k := range want {
		if _, ok := o.secrets[0].StringData[k]; !ok {
			t.Errorf("secret example lacks %s", k)
		}
	}
}

// A field the Kubernetes types do not have fails the strict decode (the
// check catches a typo such as readinesProbe).
func TestStrictDecodeCatchesTypos(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(b, []byte("readinessProbe:"), []byte("readinesProbe:"), 1)
	var o appsv1.StatefulSet
	if err := yaml.UnmarshalStrict(bad, &o); err == nil || !strings.Contains(err.Error(), "readinesProbe") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
}

// The chart renders the same cluster as the plain manifests (same
// arguments, probes, security and anti-affinity), and scales and switches
// its options as its values say.
func TestChartRenders(t *testing.T) {
	o, out := renderChart(t, "authority", "authority", nil)
	checkInvariants(t, "chart (defaults)", o, 3)
	if len(o.serviceMonitors) != 1 || len(o.secrets) != 0 {
		t.Errorf("defaults: %d service monitors, %d secrets", len(o.serviceMonitors), len(o.secrets))
	}
	plain := loadManifests(t)
	got, want := o.statefulSets[0].Spec.Template.Spec.Containers[0], plain.statefulSets[0].Spec.Template.Spec.Containers[0]
	if !slices.Equal(got.Args, want.Args) {
		t.Errorf("chart args differ from kubernetes/statefulset.yaml:\nchart %v\nplain %v", got.Args, want.Args)
	}
	if got.Image != want.Image {
		t.Errorf("chart image %s, manifest %s (keep appVersion and the manifest's tag in step)", got.Image, want.Image)
	}
	if !strings.Contains(out["authority/templates/NOTES.txt"], "authority-client") {
		t.Errorf("NOTES.txt: %q", out["authority/templates/NOTES.txt"])
	}

	o, _ = renderChart(t, "auth", "prod", map[string]any{"replicas": 5, "antiAffinity": "preferred",
		"serviceMonitor": map[string]any{"enabled": false},
		"tls":            map[string]any{"create": true, "files": map[string]any{"ca.crt": "CA PEM"}}})
	checkInvariants(t, "chart (5 replicas)", o, 5)
	if aa := o.statefulSets[0].Spec.Template.Spec.Affinity.PodAntiAffinity; len(aa.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("antiAffinity preferred: %+v", aa)
	}
	if len(o.serviceMonitors) != 0 || len(o.secrets) != 1 || string(o.secrets[0].Data["ca.crt"]) != "CA PEM" {
		t.Errorf("5 replicas: %d service monitors, secrets %v", len(o.serviceMonitors), o.secrets)
	}
	if o.statefulSets[0].Namespace != "prod" || !slices.Contains(o.statefulSets[0].Spec.Template.Spec.Containers[0].Args,
		"--peer=auth-4,auth-4.auth.prod.svc.cluster.local:7001,auth-4.auth.prod.svc.cluster.local:8001") {
		t.Errorf("release auth in prod: %v", o.statefulSets[0].Spec.Template.Spec.Containers[0].Args)
	}
}

// helm lint (Helm's Go linter) finds no warning or error in the chart.
func TestChartLint(t *testing.T) {
	l := lint.RunAll(filepath.Join(deployDir, "helm", "authority"), nil, "authority")
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", m)
		} else {
			t.Logf("helm lint: %s", m)
		}
	}
}
