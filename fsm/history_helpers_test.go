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
	h.allowed.each(func(index uint64, raw []byte) { allowed = append(allowed, record(raw, index)) })
	h.denied.each(func(index uint64, raw []byte) { denied = append(denied, record(raw, index)) })
	return allowed, denied
}
