package preflight

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"testing"
	"time"
)

// Inventories that exercise groups, children, ranges, host:port, quoting,
// comments and variable precedence (host over group, deeper group over
// shallower, same depth by name).
const crossINI = `# comment
ungrouped1 ansible_port=2201
[all:vars]
ansible_port=2000

[web]
web[01:03].example.com
www.example.com:2222 ansible_host="10.0.0.9"
web[a:c:2]    # inline comment
mix[x:B]
[web:vars]
ansible_port = 8022

[db]
db-[08:10] ansible_host=10.1.1.1
[db:vars]
ansible_port=5022

[edge]
[2001:db8::1]:2020
192.0.2.7

[dc:children]
web
db
[dc:vars]
ansible_port=9999

[misc]
plain

[alpha]
shared
deep
[alpha:vars]
ansible_port=1111
[zeta]
shared
[zeta:vars]
ansible_port=3333
[inner]
deep ansible_host='10.9.9.9'
[inner:vars]
ansible_port=4444
[zeta:children]
inner
`

const crossYAML = `all:
  vars: {ansible_port: 2000}
  hosts:
    ungrouped1: {ansible_port: 2201}
  children:
    dc:
      vars: {ansible_port: 9999}
      children:
        web:
          vars: {ansible_port: 8022}
          hosts:
            web[01:03].example.com:
            www.example.com: {ansible_host: 10.0.0.9, ansible_port: 2222}
            web[a:c:2]:
            mix[x:B]:
        db:
          vars: {ansible_port: 5022}
          hosts:
            db-[08:10]: {ansible_host: 10.1.1.1}
    edge:
      hosts:
        "2001:db8::1": {ansible_port: 2020}
        192.0.2.7:
    misc:
      hosts:
        plain:
    alpha:
      vars: {ansible_port: 1111}
      hosts:
        shared:
        deep:
    zeta:
      vars: {ansible_port: 3333}
      hosts:
        shared:
      children:
        inner:
          vars: {ansible_port: 4444}
          hosts:
            deep: {ansible_host: 10.9.9.9}
`

// ansibleInventory runs Debian's ansible-inventory --list on file.
func ansibleInventory(t *testing.T, file string) map[string]json.RawMessage {
	t.Helper()
	bin, err := exec.LookPath("ansible-inventory")
	if err != nil {
		t.Fatalf("ansible-inventory not found (install the Debian package ansible-core): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, "-i", file, "--list")
	cmd.Env = append(os.Environ(), "HOME="+home, "ANSIBLE_LOCAL_TEMP="+home, "ANSIBLE_INVENTORY_UNPARSED_FAILED=true",
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_DEPRECATION_WARNINGS=false")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("ansible-inventory -i %s --list: %v\n%s", file, err, stderr)
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("ansible-inventory output: %v\n%s", err, out)
	}
	return v
}

// TestInventoryMatchesAnsible: for every group, the hosts (with children)
// and each host's ansible_host/ansible_port are what ansible-inventory
// itself resolves from the same file.
func TestInventoryMatchesAnsible(t *testing.T) {
	for _, f := range []struct{ name, body string }{{"hosts.ini", crossINI}, {"hosts.yml", crossYAML}} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			file := writeFile(t, f.name, f.body)
			ans := ansibleInventory(t, file)
			var meta struct {
				HostVars map[string]map[string]any `json:"hostvars"`
			}
			if err := json.Unmarshal(ans["_meta"], &meta); err != nil {
				t.Fatal(err)
			}
			type groupJSON struct {
				Hosts    []string `json:"hosts"`
				Children []string `json:"children"`
			}
			groups := map[string]groupJSON{}
			for name, raw := range ans {
				if name == "_meta" {
					continue
				}
				var g groupJSON
				if err := json.Unmarshal(raw, &g); err != nil {
					t.Fatal(err)
				}
				groups[name] = g
			}
			var members func(string, map[string]bool)
			members = func(g string, into map[string]bool) {
				for _, h := range groups[g].Hosts {
					into[h] = true
				}
				for _, c := range groups[g].Children {
					members(c, into)
				}
			}
			inv, err := LoadInventory(file)
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for g := range groups {
				set := map[string]bool{}
				members(g, set)
				var want []Target
				for h := range set {
					tg := Target{Name: h, Address: h, Port: 22}
					if a, ok := meta.HostVars[h]["ansible_host"]; ok {
						tg.Address = fmt.Sprint(a)
					}
					if p, ok := meta.HostVars[h]["ansible_port"]; ok {
						tg.Port = int(p.(float64))
					}
					want = append(want, tg)
				}
				sort.Slice(want, func(i, j int) bool { return want[i].Name < want[j].Name })
				got, err := inv.Targets(g, 22)
				if err != nil {
					t.Fatalf("group %s: %v", g, err)
				}
				if len(want) == 0 && len(got) == 0 {
					continue
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("group %s:\n ours    %v\n ansible %v", g, got, want)
				}
				checked += len(got)
			}
			if all, _ := inv.Targets("all", 22); len(all) != 20 || checked < 30 {
				t.Fatalf("all: %d hosts, %d checked: the fixture is not what this test expects", len(all), checked)
			}
		})
	}
}
