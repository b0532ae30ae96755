package checker

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/validator"
)

// initiatorPolicy is how a policy-initiated record names its initiator
// (pb.Initiator_INITIATOR_POLICY.String()).
const initiatorPolicy = "INITIATOR_POLICY"

// validatorChecks are every check the validator runs (validator.go); an
// allowed policy promotion must show each of them satisfied.
var validatorChecks = []string{
	validator.CheckRequestWellformed, validator.CheckPromotionEnabled, validator.CheckCandidateEligible,
	validator.CheckExpectedEpoch, validator.CheckOldHolderInactive, validator.CheckCandidateReport,
	validator.CheckWatermarkKnown, validator.CheckCandidateContainsWatermark, validator.CheckHistoryPrefix,
	validator.CheckMvccVisibility,
}

// PolicyAntiFlapping (AU-8): over the decided promotion attempts of
// automatic domains (KindPolicy records, from each domain's History):
//
//   - no policy promotion of a domain within PolicyDwell of the domain's
//     previous promotion (whoever made it), by the records' leader stamps
//     (the policy measures the dwell from the previous record's stamp with
//     its own clock and stamps its attempt later, so in one term — one
//     leader, one clock — the stamps are exact; across terms two leaders'
//     clocks may differ by up to PolicyClockSlack, which is allowed);
//   - every promotion the policy made is a record the validator allowed
//     with every check present and satisfied, none waived (the policy
//     never bypasses the validator), and is in the nodes' logs.
//
// A history without policy records is vacuously valid (counts say so).
func PolicyAntiFlapping(in Input) Result {
	res := Result{Name: NamePolicyAntiFlapping, Valid: true, Counts: map[string]int{}}
	byDomain := map[string][]history.Record{}
	for _, r := range in.History {
		if r.Kind == history.KindPolicy {
			byDomain[r.Domain] = append(byDomain[r.Domain], r)
		}
	}
	logs, _ := normalizedLogs(in)
	dec := decisions(logs)
	var problems []string
	var minGap time.Duration = -1
	for _, domain := range slices.Sorted(mapKeys(byDomain)) {
		recs := byDomain[domain]
		slices.SortStableFunc(recs, func(a, b history.Record) int { return cmp.Compare(a.Stamped, b.Stamped) })
		var last *history.Record // the previous promotion
		for i := range recs {
			r := &recs[i]
			policy := r.Info == initiatorPolicy
			allowed := r.Value.Outcome == history.OutcomeAllowed
			promoted := r.Value.Epoch > r.Value.ExpectedEpoch && r.Value.ExpectedEpoch != 0
			if policy {
				res.Counts["policy_attempts"]++
			}
			if !allowed && !promoted {
				continue
			}
			if !policy {
				last = r
				continue
			}
			res.Counts["policy_promotions"]++
			if !allowed || !promoted {
				problems = append(problems, fmt.Sprintf("domain %q: policy record %s changed the epoch %d→%d with outcome %q",
					domain, r.RequestID, r.Value.ExpectedEpoch, r.Value.Epoch, r.Value.Outcome))
			}
			var missing []string
			for _, c := range validatorChecks {
				if !slices.Contains(r.Checks, c) {
					missing = append(missing, c)
				}
			}
			if len(missing) > 0 {
				problems = append(problems, fmt.Sprintf("domain %q: policy promotion %s to epoch %d lacks satisfied validator checks %v (has %v)",
					domain, r.RequestID, r.Value.Epoch, missing, r.Checks))
			}
			if len(dec) > 0 {
				if d, ok := resolve(dec, domain, r.RequestID); !ok || !d.Allowed || d.Epoch != r.Value.Epoch {
					problems = append(problems, fmt.Sprintf("domain %q: policy promotion %s to epoch %d is not an allowed transition in the nodes' logs",
						domain, r.RequestID, r.Value.Epoch))
				}
			}
			if last != nil {
				gap := time.Duration(r.Stamped-last.Stamped) * time.Millisecond
				if minGap < 0 || gap < minGap {
					minGap = gap
				}
				bound := in.PolicyDwell
				if last.Value.Term != r.Value.Term {
					bound -= in.PolicyClockSlack
				}
				if in.PolicyDwell > 0 && gap < bound {
					res.Counts["within_dwell"]++
					problems = append(problems, fmt.Sprintf("domain %q: policy promotion %s (epoch %d→%d) %v after the previous promotion %s, within the dwell %v",
						domain, r.RequestID, r.Value.ExpectedEpoch, r.Value.Epoch, gap, last.RequestID, in.PolicyDwell))
				}
			}
			last = r
		}
	}
	res.Counts["domains"] = len(byDomain)
	if minGap >= 0 {
		res.Counts["min_gap_ms"] = int(minGap.Milliseconds())
	}
	if len(problems) > 0 {
		res.Valid = false
		res.Details = details(problems, 5)
		return res
	}
	if res.Counts["policy_promotions"] == 0 {
		res.Details = fmt.Sprintf("no policy promotions (%d attempts, %d automatic domains recorded)", res.Counts["policy_attempts"], len(byDomain))
		return res
	}
	res.Details = fmt.Sprintf("%d policy promotions (%d attempts) in %d automatic domains, each allowed with all %d validator checks",
		res.Counts["policy_promotions"], res.Counts["policy_attempts"], len(byDomain), len(validatorChecks))
	if minGap >= 0 {
		res.Details += fmt.Sprintf("; closest to the previous promotion: %v (dwell %v)", minGap, in.PolicyDwell)
	}
	return res
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
