package compare

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

func TestVerdicts(t *testing.T) {
	faster := Row{ID: "t", Better: Higher, Win: "faster", Lose: "slower"}
	quicker := Row{ID: "l", Better: Lower, Win: "faster", Lose: "slower"}
	for _, c := range []struct {
		row        Row
		etcd, ours float64
		want       string
	}{
		{faster, 100, 150, "1.5× faster"},
		{faster, 150, 100, "1.5× slower"},
		{faster, 100, 104, "tie"},
		{quicker, 2, 1, "2.0× faster"},
		{quicker, 1, 3, "3.0× slower"},
		{quicker, 0, 3, "n/a"},
	} {
		if got := result(c.row, c.etcd, c.ours).Verdict; got != c.want {
			t.Errorf("%s etcd %v ours %v: %q, want %q", c.row.ID, c.etcd, c.ours, got, c.want)
		}
	}
}

// The report renders every row in the table and a well-formed SVG.
func TestReportRenders(t *testing.T) {
	r := &Report{Date: "2026-12-05T03:00:00Z", Mode: "quick", Config: NewConfig(true), Settings: map[string][]string{"etcd": {"e"}, "authority": {"a"}}}
	for _, f := range Families() {
		for i, row := range f.Rows {
			r.Results = append(r.Results, result(row, 10, float64(5+10*i)))
		}
	}
	md := r.Markdown()
	for _, f := range Families() {
		for _, row := range f.Rows {
			if !strings.Contains(md, "| "+r.label(row)+" |") {
				t.Errorf("table lacks row %s", row.ID)
			}
		}
	}
	if strings.Contains(md, "{N}") {
		t.Error("a label kept {N}")
	}
	svg, err := r.SVG()
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
	}
	if n := strings.Count(svg, "<rect "); n != len(r.Results)+1 {
		t.Errorf("SVG has %d rects, want a bar per row and the background (%d)", n, len(r.Results)+1)
	}
}

func TestSelect(t *testing.T) {
	fams, err := Select("cas,takeover")
	if err != nil || len(fams) != 2 || fams[0].Name != "cas" || fams[1].Name != "takeover" {
		t.Errorf("Select(cas,takeover) = %v, %v", fams, err)
	}
	if fams, _ := Select("acquire-p50"); len(fams) != 1 || fams[0].Name != "lock" {
		t.Errorf("a row ID selects its family: %v", fams)
	}
	if _, err := Select("nope"); err == nil {
		t.Error("an unknown row was accepted")
	}
}
