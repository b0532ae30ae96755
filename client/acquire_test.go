package client

import (
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// After an unknown outcome, an old grant of the same holder must not be
// mistaken for the new one.
func TestAcquiredSince(t *testing.T) {
	lock := pb.DomainKind_DOMAIN_KIND_LOCK
	db := pb.DomainKind_DOMAIN_KIND_AERODB
	cases := []struct {
		name          string
		before, after *pb.Domain
		want          bool
	}{
		{"new epoch for us", &pb.Domain{Kind: lock, Epoch: 3, Holder: "a"}, &pb.Domain{Kind: lock, Epoch: 4, Holder: "a"}, true},
		{"our old grant only", &pb.Domain{Kind: lock, Epoch: 3, Holder: "a"}, &pb.Domain{Kind: lock, Epoch: 3, Holder: "a"}, false},
		{"someone else got it", &pb.Domain{Kind: lock, Epoch: 3, Holder: "a"}, &pb.Domain{Kind: lock, Epoch: 4, Holder: "b"}, false},
		{"ours but released since", &pb.Domain{Kind: lock, Epoch: 3}, &pb.Domain{Kind: lock, Epoch: 4, Holder: "a", Released: true}, false},
		{"aerodb re-acquire applied", &pb.Domain{Kind: db, Epoch: 2, Holder: "a", UpdatedIndex: 10}, &pb.Domain{Kind: db, Epoch: 2, Holder: "a", UpdatedIndex: 12}, true},
		{"aerodb nothing applied", &pb.Domain{Kind: db, Epoch: 2, Holder: "a", UpdatedIndex: 10}, &pb.Domain{Kind: db, Epoch: 2, Holder: "a", UpdatedIndex: 10}, false},
	}
	for _, tc := range cases {
		if got := acquiredSince(tc.before, tc.after, "a"); got != tc.want {
			t.Errorf("%s: %t, want %t", tc.name, got, tc.want)
		}
	}
}
