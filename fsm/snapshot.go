package fsm

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// Snapshot format (as Consul's: a versioned header, then typed records in a
// fixed order):
//
//	magic "AUTHSNAP" | record* | trailer
//	record  = type byte | uvarint length | protobuf bytes
//	records = one header (SnapshotHeader), then one domain per name, sorted,
//	          then the server directory (ServerDirectory), then the retained
//	          event log (EventLog)
//	trailer = type byte 0xFF | CRC-32C (Castagnoli) of every byte before it
//
// Marshalling is deterministic, so equal states give equal bytes on every
// replica; StateHash hashes exactly these bytes.
const (
	snapshotMagic   = "AUTHSNAP"
	snapshotVersion = 1

	recHeader  byte = 1
	recDomain  byte = 2
	recEvents  byte = 3
	recServers byte = 4
	recTrailer byte = 0xFF

	// maxRecord bounds one record so a corrupt length cannot allocate
	// gigabytes before the checksum is verified.
	maxRecord = 256 << 20
)

// ErrCorruptSnapshot is returned by Restore for any malformed snapshot; the
// state is left exactly as it was.
var ErrCorruptSnapshot = errors.New("corrupt snapshot")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var marshal = proto.MarshalOptions{Deterministic: true}

// Snapshot serialises the whole state. It is called on raft's FSM goroutine
// (no Apply runs concurrently), so the bytes are one consistent point.
func (f *FSM) Snapshot() ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.encode()
}

func (f *FSM) encode() ([]byte, error) { return f.encodeAt(f.lastIndex, true) }

func (f *FSM) encodeAt(lastIndex uint64, withEvents bool) ([]byte, error) {
	names := f.sortedNames()
	buf := []byte(snapshotMagic)
	hdr := &pb.SnapshotHeader{Version: snapshotVersion, LastIndex: lastIndex, DomainCount: uint64(len(names))}
	var err error
	if buf, err = appendRecord(buf, recHeader, hdr); err != nil {
		return nil, err
	}
	for _, n := range names {
		if buf, err = appendRecord(buf, recDomain, f.domains[n]); err != nil {
			return nil, err
		}
	}
	if buf, err = appendRecord(buf, recServers, f.serverDirectory()); err != nil {
		return nil, err
	}
	if withEvents {
		evs := &pb.EventLog{Events: f.events.events, DroppedThrough: f.events.droppedThrough}
		if buf, err = appendRecord(buf, recEvents, evs); err != nil {
			return nil, err
		}
	}
	buf = append(buf, recTrailer)
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, crcTable)), nil
}

func appendRecord(buf []byte, typ byte, m proto.Message) ([]byte, error) {
	body, err := marshal.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("snapshot: marshal %T: %w", m, err)
	}
	buf = append(buf, typ)
	buf = binary.AppendUvarint(buf, uint64(len(body)))
	return append(buf, body...), nil
}

// StateHash is the SHA-256 of the authority state in snapshot encoding —
// every domain record and the server directory — without the applied index
// and without the event log: equal on two replicas iff their authority
// state is byte-identical. An entry that was rejected, or that only wrote
// an event (a leader's note), leaves it unchanged. (The event log is
// compared on its own: it is in the snapshot bytes and each node's
// --event-log.)
func (f *FSM) StateHash() ([32]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := f.encodeAt(0, false)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// Restore replaces the state with a snapshot. The new state is built aside
// and swapped in only when the whole snapshot, checksum included, is valid.
func (f *FSM) Restore(r io.Reader) error {
	domains, servers, events, last, err := decode(bufio.NewReader(r))
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.domains, f.lastIndex = domains, last
	f.servers = map[string]string{}
	for _, s := range servers.Servers {
		f.servers[s.Id] = s.GrpcAddress
	}
	f.requests = buildRequestIndex(domains)
	f.events.events, f.events.droppedThrough = events.Events, events.DroppedThrough
	f.events.wake(true) // watchers re-read from the restored log
	f.checker.reset(f)
	return nil
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorruptSnapshot, fmt.Sprintf(format, a...))
}

// crcReader checksums every byte read through it.
type crcReader struct {
	r   *bufio.Reader
	crc uint32
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.crc = crc32.Update(c.crc, crcTable, []byte{b})
	}
	return b, err
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc = crc32.Update(c.crc, crcTable, p[:n])
	return n, err
}

func decode(r *bufio.Reader) (map[string]*pb.Domain, *pb.ServerDirectory, *pb.EventLog, uint64, error) {
	cr := &crcReader{r: r}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(cr, magic); err != nil || string(magic) != snapshotMagic {
		return nil, nil, nil, 0, corrupt("missing %q magic", snapshotMagic)
	}
	var hdr pb.SnapshotHeader
	if err := readRecord(cr, recHeader, &hdr); err != nil {
		return nil, nil, nil, 0, err
	}
	if hdr.Version != snapshotVersion {
		return nil, nil, nil, 0, corrupt("version %d, this build reads %d", hdr.Version, snapshotVersion)
	}
	domains := make(map[string]*pb.Domain, min(hdr.DomainCount, 1024)) // trust no count before the checksum
	prev := ""
	for i := uint64(0); i < hdr.DomainCount; i++ {
		d := &pb.Domain{}
		if err := readRecord(cr, recDomain, d); err != nil {
			return nil, nil, nil, 0, err
		}
		if i > 0 && d.Name <= prev {
			return nil, nil, nil, 0, corrupt("domain %q out of order after %q", d.Name, prev)
		}
		prev = d.Name
		domains[d.Name] = d
	}
	servers := &pb.ServerDirectory{}
	if err := readRecord(cr, recServers, servers); err != nil {
		return nil, nil, nil, 0, err
	}
	events := &pb.EventLog{}
	if err := readRecord(cr, recEvents, events); err != nil {
		return nil, nil, nil, 0, err
	}
	if err := readTrailer(cr); err != nil {
		return nil, nil, nil, 0, err
	}
	return domains, servers, events, hdr.LastIndex, nil
}

func readRecord(cr *crcReader, want byte, m proto.Message) error {
	typ, err := cr.ReadByte()
	if err != nil {
		return corrupt("truncated before a record of type %d", want)
	}
	if typ != want {
		return corrupt("record type %d, expected %d", typ, want)
	}
	n, err := binary.ReadUvarint(cr)
	if err != nil || n > maxRecord {
		return corrupt("bad record length")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(cr, body); err != nil {
		return corrupt("truncated record of type %d", typ)
	}
	if err := proto.Unmarshal(body, m); err != nil {
		return corrupt("record of type %d: %v", typ, err)
	}
	return nil
}

func readTrailer(cr *crcReader) error {
	typ, err := cr.ReadByte()
	if err != nil || typ != recTrailer {
		return corrupt("missing trailer")
	}
	want := cr.crc
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return corrupt("truncated checksum")
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return corrupt("checksum %08x, computed %08x", got, want)
	}
	if _, err := cr.r.ReadByte(); err != io.EOF {
		return corrupt("trailing bytes after the checksum")
	}
	return nil
}
