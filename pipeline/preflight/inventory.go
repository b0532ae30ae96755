package preflight

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Inventory is an Ansible inventory (INI or YAML format), enough of it to
// find the hosts of a group and where to reach them: groups, children,
// host and group variables (ansible_host, ansible_port), host ranges
// (web[01:20].example.com) and INI's host:port form.
type Inventory struct {
	groups map[string]*invGroup
	hosts  map[string]map[string]string // host -> its own vars
	// entries counts host entries (a host in three groups is three), which
	// bounds the parser's work: at most maxHostEntries.
	entries int
}

// maxHostEntries bounds host entries summed over all patterns and groups
// (the distinct hosts are at most MaxHosts).
const maxHostEntries = 10 * MaxHosts

type invGroup struct {
	name     string
	hosts    map[string]bool
	children map[string]bool
	parents  map[string]bool
	vars     map[string]string
}

// Target is one TCP endpoint to reach.
type Target struct {
	// Name is the inventory host name, or the --target entry.
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    int    `json:"port"`
}

// Endpoint is address:port.
func (t Target) Endpoint() string { return net.JoinHostPort(t.Address, strconv.Itoa(t.Port)) }

// LoadInventory reads an inventory file (at most MaxInventoryBytes, at most
// MaxHosts hosts). The format is YAML for .yml, .yaml and .json files and
// for content that is a YAML mapping of groups, INI otherwise.
func LoadInventory(path string) (*Inventory, error) {
	b, err := readBounded(path, MaxInventoryBytes)
	if err != nil {
		return nil, err
	}
	inv, err := ParseInventory(b, filepath.Ext(path))
	if err != nil {
		return nil, fmt.Errorf("inventory %s: %w", filepath.Base(path), err)
	}
	return inv, nil
}

// ParseInventory parses inventory content; ext (".yml", ".ini", "") picks
// the format as LoadInventory does.
func ParseInventory(b []byte, ext string) (*Inventory, error) {
	if len(b) > MaxInventoryBytes {
		return nil, fmt.Errorf("longer than %d bytes", MaxInventoryBytes)
	}
	inv := &Inventory{groups: map[string]*invGroup{}, hosts: map[string]map[string]string{}}
	inv.group("all")
	inv.group("ungrouped")
	var err error
	switch strings.ToLower(ext) {
	case ".yml", ".yaml", ".json":
		err = inv.parseYAML(b)
	default:
		if top, ok := yamlGroups(b); ok {
			err = inv.addYAMLTop(top)
		} else {
			err = inv.parseINI(b)
		}
	}
	if err != nil {
		return nil, err
	}
	return inv, inv.finish()
}

func (inv *Inventory) group(name string) *invGroup {
	g := inv.groups[name]
	if g == nil {
		g = &invGroup{name: name, hosts: map[string]bool{}, children: map[string]bool{}, parents: map[string]bool{}, vars: map[string]string{}}
		inv.groups[name] = g
	}
	return g
}

func (inv *Inventory) addChild(parent, child string) error {
	if parent == child {
		return fmt.Errorf("group %s is its own child", quote(parent))
	}
	inv.group(parent).children[child] = true
	inv.group(child).parents[parent] = true
	return nil
}

// addHosts expands a host pattern and puts the hosts into group with vars.
func (inv *Inventory) addHosts(group, pattern string, vars map[string]string) error {
	names, err := expandHostPattern(pattern, min(MaxHosts, maxHostEntries-inv.entries))
	if err != nil {
		return err
	}
	inv.entries += len(names)
	g := inv.group(group)
	for _, n := range names {
		hv, ok := inv.hosts[n]
		if !ok {
			if len(inv.hosts) >= MaxHosts {
				return fmt.Errorf("more than %d hosts", MaxHosts)
			}
			hv = map[string]string{}
			inv.hosts[n] = hv
		}
		for k, v := range vars {
			hv[k] = v
		}
		g.hosts[n] = true
	}
	return nil
}

// finish attaches parentless groups to all, puts groupless hosts into
// ungrouped and refuses cycles.
func (inv *Inventory) finish() error {
	for name, g := range inv.groups {
		if name != "all" && len(g.parents) == 0 {
			if err := inv.addChild("all", name); err != nil {
				return err
			}
		}
	}
	grouped := map[string]bool{}
	for name, g := range inv.groups {
		if name == "all" {
			continue
		}
		for h := range g.hosts {
			grouped[h] = true
		}
	}
	for h := range inv.hosts {
		if !grouped[h] {
			inv.group("ungrouped").hosts[h] = true
		}
	}
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(n string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("group %s is its own ancestor", quote(n))
		case 2:
			return nil
		}
		state[n] = 1
		for c := range inv.groups[n].children {
			if err := visit(c); err != nil {
				return err
			}
		}
		state[n] = 2
		return nil
	}
	for _, n := range sortedKeys(inv.groups) {
		if err := visit(n); err != nil {
			return err
		}
	}
	return nil
}

// HostCount is the number of distinct hosts.
func (inv *Inventory) HostCount() int { return len(inv.hosts) }

// Targets lists the hosts of group and of its descendants, sorted by name,
// each with its address (ansible_host, else the name) and port
// (ansible_port, else defaultPort). Variables resolve as Ansible does:
// group vars from the shallowest group to the deepest (ties by name), then
// host vars.
func (inv *Inventory) Targets(group string, defaultPort int) ([]Target, error) {
	if _, ok := inv.groups[group]; !ok {
		return nil, fmt.Errorf("no group %s in the inventory", quote(group))
	}
	members := map[string]bool{}
	seen := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		g := inv.groups[n]
		for h := range g.hosts {
			members[h] = true
		}
		for c := range g.children {
			walk(c)
		}
	}
	walk(group)
	depth := inv.depths()
	var out []Target
	for _, h := range sortedKeys(members) {
		vars := inv.hostVars(h, depth)
		t := Target{Name: h, Address: h, Port: defaultPort}
		if a := firstVar(vars, "ansible_host", "ansible_ssh_host"); a != "" {
			t.Address = a
		}
		if p := firstVar(vars, "ansible_port", "ansible_ssh_port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("host %s: ansible_port %s is not a port", quote(h), quote(p))
			}
			t.Port = n
		}
		if err := validHostName(t.Address); err != nil {
			return nil, fmt.Errorf("host %s: ansible_host: %v", quote(h), err)
		}
		out = append(out, t)
	}
	return out, nil
}

func firstVar(vars map[string]string, names ...string) string {
	for _, n := range names {
		if v := vars[n]; v != "" {
			return v
		}
	}
	return ""
}

// depths: all is 0, a group is one deeper than its deepest parent (the
// graph is acyclic: finish checked).
func (inv *Inventory) depths() map[string]int {
	d := map[string]int{}
	var depth func(string) int
	depth = func(n string) int {
		if v, ok := d[n]; ok {
			return v
		}
		v := 0
		for p := range inv.groups[n].parents {
			v = max(v, depth(p)+1)
		}
		d[n] = v
		return v
	}
	for n := range inv.groups {
		depth(n)
	}
	return d
}

func (inv *Inventory) hostVars(host string, depth map[string]int) map[string]string {
	// The host's groups: those listing it and their ancestors.
	in := map[string]bool{}
	var up func(string)
	up = func(n string) {
		if in[n] {
			return
		}
		in[n] = true
		for p := range inv.groups[n].parents {
			up(p)
		}
	}
	for n, g := range inv.groups {
		if g.hosts[host] {
			up(n)
		}
	}
	groups := sortedKeys(in)
	sort.SliceStable(groups, func(i, j int) bool { return depth[groups[i]] < depth[groups[j]] })
	vars := map[string]string{}
	for _, n := range groups {
		for k, v := range inv.groups[n].vars {
			vars[k] = v
		}
	}
	for k, v := range inv.hosts[host] {
		vars[k] = v
	}
	return vars
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- INI ----

var iniSection = regexp.MustCompile(`^\[([^\[\]]+)\]\s*(?:[#;].*)?$`)

func (inv *Inventory) parseINI(b []byte) error {
	group, kind := "ungrouped", "hosts"
	for i, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		lineNo := i + 1
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if m := iniSection.FindStringSubmatch(line); m != nil {
			name, suffix, _ := strings.Cut(m[1], ":")
			name = strings.TrimSpace(name)
			if err := validGroupName(name); err != nil {
				return fmt.Errorf("line %d: %v", lineNo, err)
			}
			switch suffix {
			case "":
				kind = "hosts"
			case "vars", "children":
				kind = suffix
			default:
				return fmt.Errorf("line %d: section suffix %s: want :vars or :children", lineNo, quote(suffix))
			}
			group = name
			inv.group(group)
			continue
		}
		if line[0] == '[' && !strings.Contains(line, "]") {
			return fmt.Errorf("line %d: unterminated section header", lineNo)
		}
		switch kind {
		case "vars":
			k, v, ok := strings.Cut(line, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				return fmt.Errorf("line %d: want key=value in [%s:vars]", lineNo, group)
			}
			inv.group(group).vars[k] = unquoteINI(strings.TrimSpace(v))
		case "children":
			toks, err := shlexSplit(line)
			if err != nil {
				return fmt.Errorf("line %d: %v", lineNo, err)
			}
			if len(toks) == 0 {
				continue
			}
			if err := validGroupName(toks[0]); err != nil {
				return fmt.Errorf("line %d: %v", lineNo, err)
			}
			if err := inv.addChild(group, toks[0]); err != nil {
				return fmt.Errorf("line %d: %v", lineNo, err)
			}
		default:
			toks, err := shlexSplit(line)
			if err != nil {
				return fmt.Errorf("line %d: %v", lineNo, err)
			}
			if len(toks) == 0 {
				continue
			}
			host, port, err := splitHostPortPattern(toks[0])
			if err != nil {
				return fmt.Errorf("line %d: %v", lineNo, err)
			}
			vars := map[string]string{}
			if port != "" {
				vars["ansible_port"] = port
			}
			for _, kv := range toks[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("line %d: host variable %s: want key=value", lineNo, quote(kv))
				}
				vars[k] = v
			}
			if err := inv.addHosts(group, host, vars); err != nil {
				return fmt.Errorf("line %d: %v", lineNo, err)
			}
		}
	}
	return nil
}

func unquoteINI(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// shlexSplit splits a line as Python's shlex.split(comments=True) does for
// inventory lines: blanks separate, quotes group, '#' starts a comment.
func shlexSplit(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inTok := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '#':
			i = len(s)
		case c == ' ' || c == '\t' || c == '\r':
			if inTok {
				out = append(out, cur.String())
				cur.Reset()
				inTok = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inTok = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated quote")
			}
			inTok = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inTok = true
		default:
			cur.WriteByte(c)
			inTok = true
		}
	}
	if inTok {
		out = append(out, cur.String())
	}
	return out, nil
}

// splitHostPortPattern splits INI's "host:port", "[v6addr]:port" and bare
// addresses; ranges in brackets ("web[1:3]") are not ports.
func splitHostPortPattern(p string) (host, port string, err error) {
	if strings.HasPrefix(p, "[") {
		if end := strings.IndexByte(p, ']'); end > 0 && net.ParseIP(p[1:end]) != nil {
			rest := p[end+1:]
			switch {
			case rest == "":
				return p[1:end], "", nil
			case rest[0] == ':' && isDigits(rest[1:]):
				return p[1:end], rest[1:], nil
			}
			return "", "", fmt.Errorf("host %s: bad address", quote(p))
		}
	}
	if net.ParseIP(p) != nil {
		return p, "", nil
	}
	depth, colon := 0, -1
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ':':
			if depth == 0 {
				if colon >= 0 {
					return "", "", fmt.Errorf("host %s: more than one ':'", quote(p))
				}
				colon = i
			}
		}
	}
	if colon < 0 {
		return p, "", nil
	}
	if !isDigits(p[colon+1:]) {
		return "", "", fmt.Errorf("host %s: port is not a number", quote(p))
	}
	return p[:colon], p[colon+1:], nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

var hostRange = regexp.MustCompile(`\[([0-9]*|[a-zA-Z]):([0-9]+|[a-zA-Z])(?::([0-9]+))?\]`)

// rangeLetters orders the letters of alphabetic ranges (Python's
// string.ascii_letters, as Ansible).
const rangeLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// hostRangeSpec is the first range of a host pattern.
type hostRangeSpec struct {
	prefix, suffix string
	alpha          bool
	beg, end, step int
	width          int // zero-padded width of numeric items, 0 for none
}

// firstRange parses the first [beg:end(:step)] of p; ok is false when p
// has none.
func firstRange(p string) (r hostRangeSpec, ok bool, err error) {
	loc := hostRange.FindStringSubmatchIndex(p)
	if loc == nil {
		if strings.ContainsAny(p, "[]") {
			return r, false, fmt.Errorf("host %s: bad range", quote(p))
		}
		return r, false, nil
	}
	r.prefix, r.suffix = p[:loc[0]], p[loc[1]:]
	beg, end := p[loc[2]:loc[3]], p[loc[4]:loc[5]]
	r.step = 1
	if loc[6] >= 0 {
		s, err := strconv.Atoi(p[loc[6]:loc[7]])
		if err != nil || s < 1 {
			return r, false, fmt.Errorf("host %s: bad range step", quote(p))
		}
		r.step = s
	}
	r.alpha = beg != "" && !isDigits(beg)
	if r.alpha != !isDigits(end) {
		return r, false, fmt.Errorf("host %s: range mixes letters and numbers", quote(p))
	}
	if r.alpha {
		// As Ansible: positions in a-zA-Z.
		r.beg, r.end = strings.IndexByte(rangeLetters, beg[0]), strings.IndexByte(rangeLetters, end[0])
	} else {
		b, err1 := strconv.Atoi(orZero(beg))
		e, err2 := strconv.Atoi(end)
		if err1 != nil || err2 != nil {
			return r, false, fmt.Errorf("host %s: bad range", quote(p))
		}
		r.beg, r.end = b, e
		if len(beg) > 1 && beg[0] == '0' {
			if len(beg) != len(end) {
				return r, false, fmt.Errorf("host %s: a zero-padded range needs begin and end of equal length", quote(p))
			}
			r.width = len(beg)
		}
	}
	if r.beg > r.end {
		return r, false, fmt.Errorf("host %s: empty range", quote(p))
	}
	return r, true, nil
}

func (r hostRangeSpec) size() int { return (r.end-r.beg)/r.step + 1 }

func (r hostRangeSpec) item(i int) string {
	if r.alpha {
		return rangeLetters[i : i+1]
	}
	return fmt.Sprintf("%0*d", r.width, i)
}

// countHostPattern is how many hosts p expands to, capped at cap+1 (so
// that no product overflows).
func countHostPattern(p string, cap int) (int, error) {
	r, ok, err := firstRange(p)
	if err != nil || !ok {
		return 1, err
	}
	// Items hold no brackets: the suffix's ranges are the same for every
	// item.
	rest, err := countHostPattern(r.suffix, cap)
	if err != nil {
		return 0, err
	}
	if n := r.size(); n > cap || rest > cap/n {
		return cap + 1, nil
	}
	return r.size() * rest, nil
}

// expandHostPattern expands the ranges of a host pattern (Ansible's
// [beg:end] and [beg:end:step], numeric with leading zeros kept, or single
// letters), refusing, before expanding anything, a pattern of more than
// limit hosts.
func expandHostPattern(p string, limit int) ([]string, error) {
	n, err := countHostPattern(p, MaxHosts)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("host %s: more than %d hosts (or %d host entries in all)", quote(p), MaxHosts, maxHostEntries)
	}
	return expandCounted(p)
}

func expandCounted(p string) ([]string, error) {
	r, ok, err := firstRange(p)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := validHostName(p); err != nil {
			return nil, err
		}
		return []string{p}, nil
	}
	var out []string
	for i := r.beg; i <= r.end; i += r.step {
		rest, err := expandCounted(r.prefix + r.item(i) + r.suffix)
		if err != nil {
			return nil, err
		}
		out = append(out, rest...)
	}
	return out, nil
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

func validHostName(h string) error {
	if h == "" || len(h) > 253 || strings.IndexFunc(h, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return fmt.Errorf("host %s is not a host name", quote(h))
	}
	return nil
}

func validGroupName(g string) error {
	if g == "" || len(g) > 255 || strings.IndexFunc(g, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return fmt.Errorf("group %s is not a group name", quote(g))
	}
	return nil
}

// ---- YAML ----

// yamlGroup is one group of a YAML inventory.
type yamlGroup struct {
	Hosts    map[string]map[string]any `yaml:"hosts"`
	Vars     map[string]any            `yaml:"vars"`
	Children map[string]*yamlGroup     `yaml:"children"`
}

// yamlGroups decodes b as a mapping of groups (strictly: any other YAML,
// or no YAML, is not a YAML inventory).
func yamlGroups(b []byte) (map[string]*yamlGroup, bool) {
	var top map[string]*yamlGroup
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&top); err != nil || len(top) == 0 {
		return nil, false
	}
	return top, true
}

func (inv *Inventory) parseYAML(b []byte) error {
	var top map[string]*yamlGroup
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&top); err != nil {
		return fmt.Errorf("YAML inventory: %v", err)
	}
	return inv.addYAMLTop(top)
}

func (inv *Inventory) addYAMLTop(top map[string]*yamlGroup) error {
	for _, name := range sortedKeys(top) {
		if err := inv.addYAMLGroup(name, top[name], 0); err != nil {
			return err
		}
	}
	return nil
}

// maxGroupDepth bounds the recursion of nested children.
const maxGroupDepth = 64

func (inv *Inventory) addYAMLGroup(name string, g *yamlGroup, depth int) error {
	if err := validGroupName(name); err != nil {
		return err
	}
	if depth > maxGroupDepth {
		return fmt.Errorf("groups nested deeper than %d", maxGroupDepth)
	}
	inv.group(name)
	if g == nil {
		return nil
	}
	for k, v := range g.Vars {
		if s, ok := scalarString(v); ok {
			inv.group(name).vars[k] = s
		}
	}
	for _, h := range sortedKeys(g.Hosts) {
		vars := map[string]string{}
		for k, v := range g.Hosts[h] {
			if s, ok := scalarString(v); ok {
				vars[k] = s
			}
		}
		if err := inv.addHosts(name, h, vars); err != nil {
			return err
		}
	}
	for _, c := range sortedKeys(g.Children) {
		if err := inv.addChild(name, c); err != nil {
			return err
		}
		if err := inv.addYAMLGroup(c, g.Children[c], depth+1); err != nil {
			return err
		}
	}
	return nil
}

func scalarString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case int, int64, uint64, float64, bool:
		return fmt.Sprint(v), true
	}
	return "", false
}
