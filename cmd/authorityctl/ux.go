package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// outputYAML: the same structures as -o json, as YAML (object keys in the
// JSON's order).
const outputYAML = "yaml"

// yamlWriter converts what a jsonPrinter writes (one complete JSON
// document per Write, or one per line for streams) into YAML. A stream's
// documents each start with "---".
type yamlWriter struct {
	w      io.Writer
	stream bool
}

func (y *yamlWriter) Write(p []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var out bytes.Buffer
	for {
		n, err := jsonNode(dec)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		if y.stream {
			out.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&out)
		enc.SetIndent(2)
		if err := enc.Encode(n); err != nil {
			return 0, err
		}
		if err := enc.Close(); err != nil {
			return 0, err
		}
	}
	if _, err := y.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// jsonNode reads one JSON value as a YAML node, keeping object key order.
func jsonNode(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := jsonNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmt.Sprint(k)}, v)
			}
			_, err := dec.Token() // '}'
			return n, err
		case '[':
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			_, err := dec.Token() // ']'
			return n, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t}, nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(t), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// probeEndpoints returns nil as soon as one endpoint accepts a TCP
// connection (or when an endpoint is a gRPC target URI, which only gRPC
// resolves). When none does, the error names each endpoint's failure: a
// refused connection is known at once, so nobody waits out --timeout.
func probeEndpoints(ctx context.Context, endpoints []string) error {
	for _, ep := range endpoints {
		if strings.Contains(ep, "://") || strings.Contains(ep, ":///") {
			return nil
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		i   int
		err error
	}
	answers := make(chan answer, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", ep)
			if err == nil {
				_ = conn.Close()
			}
			answers <- answer{i, err}
		}()
	}
	defer wg.Wait()
	errs := make([]string, len(endpoints))
	for range endpoints {
		a := <-answers
		if a.err == nil {
			return nil
		}
		errs[a.i] = endpoints[a.i] + ": " + dialFailure(a.err)
	}
	return fmt.Errorf("cannot reach any endpoint (%s); are the servers running, and do --endpoints name their gRPC addresses?",
		strings.Join(errs, "; "))
}

// dialFailure is a short human description of a TCP dial error.
func dialFailure(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer within --timeout"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "unknown host " + dnsErr.Name
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

// nameError rewrites a name validation error so that a non-ASCII character
// is shown as the character itself (the service's message shows its first
// byte, so "ü" read as "Ã").
func nameError(kind, s string, err error) error {
	for i, r := range s {
		ascii := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if ascii || i > 0 && strings.ContainsRune("._:-", r) {
			continue
		}
		if r == utf8.RuneError {
			return fmt.Errorf("%s %q: not valid UTF-8 at byte %d", kind, s, i)
		}
		if len(s) > 128 {
			break
		}
		return fmt.Errorf("%s %q: character %q at byte %d is not allowed (use ASCII letters, digits, and after the first character '.', '_', ':', '-')",
			kind, s, r, i)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "invalid argument: "))
}

// Go-internal error texts and what the user is told instead.
var humanErrors = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`strconv\.Parse(?:Uint|Int|Float|Bool): parsing "((?:[^"\\]|\\.)*)": invalid syntax`), `"$1" is not a valid value`},
	{regexp.MustCompile(`strconv\.Parse(?:Uint|Int|Float): parsing "((?:[^"\\]|\\.)*)": value out of range`), `"$1" is out of range`},
	{regexp.MustCompile(`time: invalid duration "((?:[^"\\]|\\.)*)"`), `"$1" is not a duration (e.g. 500ms, 30s, 2m)`},
	{regexp.MustCompile(`time: missing unit in duration "((?:[^"\\]|\\.)*)"`), `"$1" lacks a unit (e.g. 500ms, 30s, 2m)`},
	{regexp.MustCompile(`rpc error: code = \w+ desc = `), ``},
	{regexp.MustCompile(`context deadline exceeded`), `timed out (--timeout)`},
	{regexp.MustCompile(`context canceled`), `interrupted`},
	{regexp.MustCompile(`open (\S+): no such file or directory`), `$1: no such file`},
	{regexp.MustCompile(`open (\S+): permission denied`), `$1: permission denied`},
}

// humanize replaces Go-internal error texts with words for an operator.
func humanize(msg string) string {
	for _, h := range humanErrors {
		msg = h.re.ReplaceAllString(msg, h.repl)
	}
	return msg
}

// cleanFlagError is err with Go-internal texts replaced.
func cleanFlagError(err error) error {
	return errors.New(humanize(err.Error()))
}
