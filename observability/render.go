package observability

import (
	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/render"
)

// The explanation artifact and the event JSON line are package render's
// (shared with authorityctl, which links no server package); these names
// keep observability's API.
type (
	Explanation      = render.Explanation
	ExplainedRequest = render.ExplainedRequest
	ExplainedCheck   = render.ExplainedCheck
	ExplainedLease   = render.ExplainedLease
	ExplainedReport  = render.ExplainedReport
	KV               = render.KV
	Evidence         = render.Evidence
	EventJSON        = render.EventJSON
)

// Explain is render.Explain.
func Explain(rec *pb.AttemptRecord) *Explanation { return render.Explain(rec) }

// ExplanationJSON is render.ExplanationJSON.
func ExplanationJSON(rec *pb.AttemptRecord) ([]byte, error) { return render.ExplanationJSON(rec) }

// EventLine is render.EventLine.
func EventLine(ev *pb.Event) ([]byte, error) { return render.EventLine(ev) }
