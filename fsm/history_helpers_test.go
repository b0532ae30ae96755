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

// dom returns a decoded copy of a domain's record (nil when absent).
func (f *FSM) dom(name string) *pb.Domain {
	d, _ := f.peek(name)
	return d
}

// setDomain replaces (or adds) a domain's record, as a forged or prepared
// state would, keeping the state hash's terms right.
func (f *FSM) setDomain(d *pb.Domain) {
	raw := encodeDomain(d)
	if old, ok := f.recs[d.Name]; ok {
		f.digest.sub(domainDigestRaw(old.raw))
	}
	f.digest.add(domainDigestRaw(raw))
	f.putRec(d.Name, recOf(d, raw))
	f.hot = hotDomains{}
}
