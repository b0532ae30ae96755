package fsm

import pb "github.com/aerodb/authority/api/authority/v1"

// attemptsOf returns a domain's stored attempts, decoded: allowed and kept
// denied ones, each in log order.
func attemptsOf(f *FSM, domain string) (allowed, denied []*pb.AttemptRecord) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := f.histories[domain]
	if h == nil {
		return nil, nil
	}
	for _, s := range h.allowed {
		allowed = append(allowed, s.record())
	}
	for _, s := range h.denied {
		denied = append(denied, s.record())
	}
	return allowed, denied
}
