package render

import (
	"encoding/json"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// EventJSON is an event's JSON form, also used by `authorityctl watch`.
type EventJSON struct {
	Index         uint64 `json:"index"`
	Seq           uint32 `json:"seq"`
	Type          string `json:"type"`
	Domain        string `json:"domain,omitempty"`
	Epoch         uint64 `json:"epoch"`
	Holder        string `json:"holder,omitempty"`
	Fields        []KV   `json:"fields"`
	StampedUnixMs int64  `json:"stamped_unix_ms"`
}

// EventLine renders one event as a JSON line (with the newline).
func EventLine(ev *pb.Event) ([]byte, error) {
	j := EventJSON{Index: ev.Index, Seq: ev.Seq, Type: ev.Type, Domain: ev.Domain, Epoch: ev.Epoch, Holder: ev.Holder,
		Fields: []KV{}, StampedUnixMs: ev.StampedUnixMs}
	for _, f := range ev.Fields {
		j.Fields = append(j.Fields, KV{Key: f.Key, Value: f.Value})
	}
	b, err := json.Marshal(j)
	return append(b, '\n'), err
}
