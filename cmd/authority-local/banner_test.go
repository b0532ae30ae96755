package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestBannerHasNoRequestIDTrap: the commands `make run` prints, followed in
// order, succeed: no dry run carries a request id (once a real promotion
// recorded that id, the dry run is refused with CONFLICT), and no request
// id is suggested twice (the second run prints the first one's recorded
// decision). The banner suggested `promote … --request-id try-1 --dry-run`
// and then the real promotion with try-1.
func TestBannerHasNoRequestIDTrap(t *testing.T) {
	re := regexp.MustCompile(`--request-id[ =]([A-Za-z0-9._:-]+)`)
	seen := map[string]string{}
	for _, f := range []string{"main.go", "demo.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "promote ") {
				continue
			}
			m := re.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if strings.Contains(line, "--dry-run") {
				t.Errorf("%s: a dry run with a request id: %s", f, strings.TrimSpace(line))
			}
			if prev, ok := seen[m[1]]; ok {
				t.Errorf("%s: request id %s suggested twice:\n%s\n%s", f, m[1], prev, strings.TrimSpace(line))
			}
			seen[m[1]] = strings.TrimSpace(line)
		}
	}
}
