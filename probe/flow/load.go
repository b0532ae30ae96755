package flow

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Diag is one error found in a flow file.
type Diag struct {
	Pos Pos
	Msg string
}

func (d Diag) String() string { return d.Pos.String() + ": " + d.Msg }

// Diags is every error found while loading; empty means the files are valid.
type Diags []Diag

func (ds Diags) Error() string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(d.String())
	}
	return b.String()
}

// Err returns ds as an error, or nil when empty.
func (ds Diags) Err() error {
	if len(ds) == 0 {
		return nil
	}
	return ds
}

func (ds Diags) sort() {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i].Pos, ds[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// MaxFileBytes bounds one flow file.
const MaxFileBytes = 4 << 20

// LoadFiles reads, strictly decodes, merges and validates flow files. It
// returns every error found (with file:line), not only the first.
func LoadFiles(paths ...string) (*Config, Diags) {
	var srcs []Source
	var diags Diags
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			diags = append(diags, Diag{Pos{File: p}, err.Error()})
			continue
		}
		srcs = append(srcs, Source{Name: p, Data: data})
	}
	cfg, more := Load(srcs...)
	diags = append(diags, more...)
	diags.sort()
	return cfg, diags
}

// Source is one named flow file's content.
type Source struct {
	Name string
	Data []byte
}

// Load decodes, merges and validates in-memory flow files.
func Load(srcs ...Source) (*Config, Diags) {
	cfg := &Config{Environments: map[string]*Environment{}, Setups: map[string]*Setup{}}
	var diags Diags
	limitsSet := false
	for _, src := range srcs {
		cfg.Files = append(cfg.Files, src.Name)
		f, ds := decodeFile(src)
		diags = append(diags, ds...)
		if f == nil {
			continue
		}
		for name, e := range f.Environments {
			if e == nil {
				diags = append(diags, Diag{Pos{File: src.Name}, fmt.Sprintf("environment %q is empty", name)})
				continue
			}
			if prev, ok := cfg.Environments[name]; ok {
				diags = append(diags, Diag{e.Pos, fmt.Sprintf("environment %q already defined at %s", name, prev.Pos)})
				continue
			}
			cfg.Environments[name] = e
		}
		for name, s := range f.Setups {
			if s == nil {
				diags = append(diags, Diag{Pos{File: src.Name}, fmt.Sprintf("setup %q is empty", name)})
				continue
			}
			if prev, ok := cfg.Setups[name]; ok {
				diags = append(diags, Diag{s.Pos, fmt.Sprintf("setup %q already defined at %s", name, prev.Pos)})
				continue
			}
			s.Name = name
			cfg.Setups[name] = s
		}
		for i, fl := range f.Flows {
			if fl == nil {
				diags = append(diags, Diag{Pos{File: src.Name}, fmt.Sprintf("flows[%d] is empty", i)})
				continue
			}
			cfg.Flows = append(cfg.Flows, fl)
		}
		for i, sl := range f.SLOs {
			if sl == nil {
				diags = append(diags, Diag{Pos{File: src.Name}, fmt.Sprintf("slos[%d] is empty", i)})
				continue
			}
			cfg.SLOs = append(cfg.SLOs, sl)
		}
		if f.Limits != nil {
			if limitsSet {
				diags = append(diags, Diag{Pos{File: src.Name}, "limits: defined in more than one file"})
			}
			limitsSet = true
			cfg.Limits = *f.Limits
		}
	}
	diags = append(diags, validate(cfg)...)
	diags.sort()
	return cfg, diags
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func decodeFile(src Source) (*File, Diags) {
	var diags Diags
	at := func(n *yaml.Node) Pos {
		if n == nil {
			return Pos{File: src.Name}
		}
		return Pos{File: src.Name, Line: n.Line, Col: n.Column}
	}
	if len(src.Data) > MaxFileBytes {
		return nil, Diags{{Pos{File: src.Name}, fmt.Sprintf("file is %d bytes, more than the %d allowed", len(src.Data), MaxFileBytes)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(src.Data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err.Error() == "EOF" {
			return &File{}, nil
		}
		return nil, Diags{yamlErr(src.Name, err.Error())}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		diags = append(diags, Diag{at(&extra), "a flow file holds one YAML document"})
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	// Strict pass: unknown fields, duplicate keys, inline secrets, wrong
	// node kinds, all at once.
	checkNode(root, reflect.TypeOf(File{}), "", at, &diags)
	var f File
	if err := root.Decode(&f); err != nil {
		if te, ok := err.(*yaml.TypeError); ok {
			for _, e := range te.Errors {
				diags = append(diags, yamlErr(src.Name, e))
			}
		} else {
			diags = append(diags, yamlErr(src.Name, err.Error()))
		}
	}
	fillPositions(&f, root, at)
	return &f, dedupe(diags)
}

func yamlErr(file, msg string) Diag {
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Diag{Pos{File: file, Line: line, Col: 1}, m[2]}
	}
	return Diag{Pos{File: file}, msg}
}

// dedupe drops a type error at the same line as a strict-pass error (the
// strict pass explains it better).
func dedupe(ds Diags) Diags {
	seen := map[int]bool{}
	var out Diags
	for _, d := range ds {
		if d.Pos.Col == 1 && strings.HasPrefix(d.Msg, "cannot unmarshal") && seen[d.Pos.Line] {
			continue
		}
		seen[d.Pos.Line] = true
		out = append(out, d)
	}
	return out
}

var (
	durationType  = reflect.TypeOf(Duration(0))
	secretRefType = reflect.TypeOf(SecretRef{})
)

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

// checkNode walks n against Go type t and reports unknown fields, duplicate
// keys and wrong shapes. Values are decoded (and type-checked) afterwards.
func checkNode(n *yaml.Node, t reflect.Type, path string, at func(*yaml.Node) Pos, diags *Diags) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		*diags = append(*diags, Diag{at(n), "YAML aliases are not allowed in flow files"})
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if t == durationType {
		return // its UnmarshalYAML reports errors
	}
	if t == secretRefType && n.Kind == yaml.ScalarNode {
		*diags = append(*diags, Diag{at(n), fmt.Sprintf("%s: secrets are references to environment variables ({env: NAME}), never inline values", path)})
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			*diags = append(*diags, Diag{at(n), fmt.Sprintf("%s: expected a mapping, found %s", orRoot(path), kindName(n))})
			return
		}
		fields := map[string]reflect.StructField{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := strings.Split(sf.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" || !sf.IsExported() {
				continue
			}
			fields[tag] = sf
			names = append(names, tag)
		}
		seen := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if prev, ok := seen[k.Value]; ok {
				*diags = append(*diags, Diag{at(k), fmt.Sprintf("%s: duplicate field %q (first at line %d)", orRoot(path), k.Value, prev.Line)})
				continue
			}
			seen[k.Value] = k
			sf, ok := fields[k.Value]
			if !ok {
				*diags = append(*diags, Diag{at(k), fmt.Sprintf("%s: unknown field %q (known: %s)", orRoot(path), k.Value, strings.Join(names, ", "))})
				continue
			}
			checkNode(v, sf.Type, join(path, k.Value), at, diags)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			*diags = append(*diags, Diag{at(n), fmt.Sprintf("%s: expected a mapping, found %s", orRoot(path), kindName(n))})
			return
		}
		seen := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if prev, ok := seen[k.Value]; ok {
				*diags = append(*diags, Diag{at(k), fmt.Sprintf("%s: duplicate key %q (first at line %d)", orRoot(path), k.Value, prev.Line)})
				continue
			}
			seen[k.Value] = k
			checkNode(v, t.Elem(), join(path, k.Value), at, diags)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			*diags = append(*diags, Diag{at(n), fmt.Sprintf("%s: expected a list, found %s", orRoot(path), kindName(n))})
			return
		}
		for i, item := range n.Content {
			checkNode(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), at, diags)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			*diags = append(*diags, Diag{at(n), fmt.Sprintf("%s: expected a %s, found %s", orRoot(path), t.Kind(), kindName(n))})
		}
	}
}

func orRoot(p string) string {
	if p == "" {
		return "(top level)"
	}
	return p
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// get returns the value node of key k in mapping n.
func get(n *yaml.Node, k string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == k {
			return n.Content[i+1]
		}
	}
	return nil
}

func keyNode(n *yaml.Node, k string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == k {
			return n.Content[i]
		}
	}
	return nil
}

func item(n *yaml.Node, i int) *yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
		return nil
	}
	return n.Content[i]
}

// fillPositions records where each element was defined, for semantic errors.
func fillPositions(f *File, root *yaml.Node, at func(*yaml.Node) Pos) {
	pos := func(n, fallback *yaml.Node) Pos {
		if n == nil {
			return at(fallback)
		}
		return at(n)
	}
	envs := get(root, "environments")
	for name, e := range f.Environments {
		if e != nil {
			e.Pos = pos(keyNode(envs, name), envs)
		}
	}
	setups := get(root, "setups")
	for name, s := range f.Setups {
		if s == nil {
			continue
		}
		s.Pos = pos(keyNode(setups, name), setups)
		sn := get(setups, name)
		fillSteps(s.Steps, get(sn, "steps"), at)
	}
	flows := get(root, "flows")
	for i, fl := range f.Flows {
		if fl == nil {
			continue
		}
		fn := item(flows, i)
		fl.Pos = pos(fn, flows)
		fillSteps(fl.Steps, get(fn, "steps"), at)
	}
	slos := get(root, "slos")
	for i, s := range f.SLOs {
		if s != nil {
			s.Pos = pos(item(slos, i), slos)
		}
	}
}

func fillSteps(steps []*Step, seq *yaml.Node, at func(*yaml.Node) Pos) {
	for i, s := range steps {
		if s == nil {
			continue
		}
		sn := item(seq, i)
		if sn == nil {
			sn = seq
		}
		s.Pos = at(sn)
		req := get(sn, "request")
		s.URLPos = at(orNode(get(req, "url"), sn))
		s.BodyPos = at(orNode(get(req, "body"), sn))
		s.HeadersPos = map[string]Pos{}
		hn := get(req, "headers")
		for k := range s.Request.Headers {
			s.HeadersPos[k] = at(orNode(get(hn, k), sn))
		}
		an := get(sn, "assert")
		s.AssertPos = make([]Pos, len(s.Assert))
		for j := range s.Assert {
			s.AssertPos[j] = at(orNode(item(an, j), sn))
		}
		en := get(sn, "extract")
		for j, e := range s.Extract {
			if e != nil {
				e.Pos = at(orNode(item(en, j), sn))
			}
		}
	}
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n == nil {
		return fallback
	}
	return n
}
