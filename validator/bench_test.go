package validator

import "testing"

func BenchmarkEvaluateAllowed(b *testing.B) {
	in := allowedInput()
	b.ReportAllocs()
	for b.Loop() {
		if !Evaluate(in).GetAllowed() {
			b.Fatal("want allowed")
		}
	}
}

func BenchmarkEvaluateDenied(b *testing.B) {
	in := allowedInput()
	behindReplica(&in)
	in.Attempt.CandidateReport.AppliedCommitId = 50
	b.ReportAllocs()
	for b.Loop() {
		if Evaluate(in).GetAllowed() {
			b.Fatal("want denied")
		}
	}
}
